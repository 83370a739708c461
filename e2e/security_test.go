package e2e

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/subjects"
)

// leaky are fragments of store errors that must never reach a client
// (H12): stream and bucket names, JetStream API subjects, file paths.
var leaky = []string{"stream", "jetstream", "kv", "$js", "/", "\\", "nats:", "bucket", "membership-keys", "no responders", "timeout", "context"}

// checkGeneric fails the test if a 5xx text carries a store detail.
func checkGeneric(t *testing.T, text, storeDir string) {
	t.Helper()
	if text == "" {
		t.Fatal("503 without an error text")
	}
	low := strings.ToLower(text)
	for _, l := range leaky {
		if strings.Contains(low, l) {
			t.Errorf("503 text %q contains %q", text, l)
		}
	}
	if storeDir != "" && strings.Contains(text, storeDir) {
		t.Errorf("503 text %q contains the store directory", text)
	}
}

// TestStoreUnreachable makes JetStream unreachable while the NATS
// connection stays up: reads and mutations are 503 with a fixed generic
// text (H12), nothing is accepted (fail closed), and once the store is back
// (a server restarted on the same store directory) the very same signed
// requests are served as new.
func TestStoreUnreachable(t *testing.T) {
	dir := t.TempDir()
	s := natstest.ServerWith(t, &server.Options{StoreDir: dir})
	svc := membertest.Service(t, s, service.Config{RequestTimeout: 300 * time.Millisecond})
	admin := membertest.Admin(t, s)
	alice := membertest.Member(t, s, admin, "alice")
	carol := membertest.Member(t, s, admin, "carol")
	nc := natstest.Connect(t, s)
	ctx := natstest.Ctx(t, 3)
	_, key, err := alice.CreateRoom(ctx, "r1", "chat.r1", nil)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	beforeDump, beforeNonces := membertest.Dump(t, nc), membertest.NonceKeys(t, nc)
	jsCfg := s.JetStreamConfig()
	if jsCfg == nil {
		t.Fatal("no JetStream config")
	}
	storeDir := jsCfg.StoreDir

	read := membertest.Signed(t, alice.Identity().Sign, subjects.OpRoomGet, membertest.Body(t, api.RoomRequest{Room: "r1"}))
	mutation := addRequest(t, alice, carol, "r1", key, membertest.Nonce(t))
	whoami := membertest.Signed(t, carol.Identity().Sign, subjects.OpWhoami, membertest.Body(t, api.Empty{}))

	if err := s.ShutdownJetStream(); err != nil {
		t.Fatalf("shut down JetStream: %v", err)
	}
	if !nc.IsConnected() {
		t.Fatal("the NATS connection went down with JetStream")
	}
	tests := []struct {
		name string
		op   subjects.Op
		data []byte
	}{
		{"read", subjects.OpRoomGet, read},
		{"mutation", subjects.OpRoomAdd, mutation},
		{"whoami", subjects.OpWhoami, whoami},
	}
	for _, tt := range tests {
		t.Run("unreachable/"+tt.name, func(t *testing.T) {
			r := membertest.RequestOp(t, nc, tt.op, tt.data)
			r.Expect(t, subjects.CodeUnavailable, api.KindUnavailable.Reason())
			checkGeneric(t, r.Text, storeDir)
			if len(r.Data) != 0 {
				t.Fatalf("503 with a body %q", r.Data)
			}
		})
	}
	t.Run("unreachable/client", func(t *testing.T) {
		c := client.New(natstest.Connect(t, s), alice.Identity(), client.WithRetries(1), client.WithBackoff(time.Millisecond))
		if _, err := c.Room(ctx, "r1"); !errors.Is(err, client.ErrUnavailable) {
			t.Fatalf("client read: %v, want unavailable", err)
		}
	})
	t.Run("unreachable/stats last_error", func(t *testing.T) {
		// The text also shows in `nats micro stats`.
		last := map[string]string{}
		for _, e := range svc.Micro().Stats().Endpoints {
			last[e.Name] = e.LastError
		}
		for _, tt := range tests {
			text, ok := strings.CutPrefix(last[tt.op.EndpointName()], "503:")
			if !ok {
				t.Fatalf("%s last_error %q, want a 503", tt.op, last[tt.op.EndpointName()])
			}
			checkGeneric(t, text, storeDir)
		}
	})

	// Bring the store back: EnableJetStream after ShutdownJetStream races
	// inside nats-server, so restart the server on the same directory and
	// start a replica on it.
	s.Shutdown()
	s.WaitForShutdown()
	s = natstest.ServerWith(t, &server.Options{StoreDir: dir})
	membertest.Service(t, s, service.Config{})
	nc = natstest.Connect(t, s)
	alice = client.New(natstest.Connect(t, s), alice.Identity())
	admin = client.New(natstest.Connect(t, s), admin.Identity())

	var floor int64 // the nonce floor after the restart
	t.Run("nothing accepted", func(t *testing.T) {
		membertest.SameDump(t, beforeDump, membertest.Dump(t, nc))
		// The restart lost the read claims (memory, by design); the
		// durable nonce keys must be exactly as before.
		durable := func(keys []string) []string {
			return slices.DeleteFunc(slices.Clone(keys), func(k string) bool { return strings.HasPrefix(k, "readclaim.") })
		}
		if after := membertest.NonceKeys(t, nc); !slices.Equal(durable(beforeNonces), durable(after)) {
			t.Fatalf("nonce keys changed while the store was down: %v → %v", beforeNonces, after)
		}
		// The requests refused with 503 claimed no nonce: the same bytes
		// are now served as new requests, not as replays — the mutation,
		// whose nonce is durable. The reads are older than the restart,
		// which lost the read claims (memory): they are refused for the
		// nonce floor, and signed anew they are served.
		for _, tt := range tests {
			if tt.op == subjects.OpRoomAdd {
				membertest.RequestOp(t, nc, tt.op, tt.data).Expect(t, 0, "")
				continue
			}
			r := membertest.RequestOp(t, nc, tt.op, tt.data)
			r.Expect(t, subjects.CodeUnauthorized, api.KindNonceFloor.Reason())
			floor = r.Floor
		}
		if _, err := alice.Room(ctx, "r1"); err != nil {
			t.Fatalf("read signed anew after the restart: %v", err)
		}
		if ids := memberIDs(t, alice, "r1"); !slices.Equal(ids, []string{"alice", "carol"}) {
			t.Fatalf("members %v", ids)
		}
	})

	t.Run("bucket deleted", func(t *testing.T) {
		js := natstest.JetStream(t, nc)
		if err := js.DeleteKeyValue(ctx, subjects.DefaultBucket); err != nil {
			t.Fatalf("delete bucket: %v", err)
		}
		for _, tt := range []struct {
			op   subjects.Op
			data []byte
		}{
			// Stamped at the nonce floor the restart set, so that the
			// read gets as far as the store.
			{subjects.OpRoomGet, membertest.Marshal(t, membertest.Envelope(t, alice.Identity().Sign, subjects.Subject(subjects.DefaultPrefix, subjects.OpRoomGet),
				time.UnixMilli(floor), membertest.Nonce(t), membertest.Body(t, api.RoomRequest{Room: "r1"})))},
			{subjects.OpRoomAdd, addRequest(t, alice, admin, "r1", key, membertest.Nonce(t))},
		} {
			r := membertest.RequestOp(t, nc, tt.op, tt.data)
			r.Expect(t, subjects.CodeUnavailable, api.KindUnavailable.Reason())
			checkGeneric(t, r.Text, storeDir)
		}
		if _, err := js.Stream(ctx, "KV_"+subjects.DefaultBucket); !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Fatalf("the KV stream came back: %v", err)
		}
	})
}

// TestAuditH3 checks that being registered is not enough to read a room:
// reads need membership, a member gets only its own sealed key and only
// for epochs it belonged to, and the room directory is one's own.
func TestAuditH3(t *testing.T) {
	s, admin := membertest.Start(t, service.Config{})
	alice := membertest.Member(t, s, admin, "alice")
	bob := membertest.Member(t, s, admin, "bob")
	carol := membertest.Member(t, s, admin, "carol")
	mallory := membertest.Member(t, s, admin, "mallory")
	ctx := natstest.Ctx(t, 3)
	for _, r := range []struct {
		id      string
		members []string
	}{{"private", nil}, {"shared", []string{"bob", "carol"}}} {
		if _, _, err := alice.CreateRoom(ctx, r.id, "chat."+r.id, r.members); err != nil {
			t.Fatalf("create %s: %v", r.id, err)
		}
	}
	if _, _, err := bob.CreateRoom(ctx, "bobs", "chat.bobs", nil); err != nil {
		t.Fatalf("create bobs: %v", err)
	}

	t.Run("non-member reads", func(t *testing.T) {
		reads := []struct {
			name string
			call func(c *client.Client, room string) error
		}{
			{"room.get", func(c *client.Client, room string) error { _, err := c.Room(ctx, room); return err }},
			{"room.members", func(c *client.Client, room string) error { _, err := c.Members(ctx, room, "", 0); return err }},
			{"room.key current", func(c *client.Client, room string) error { _, err := c.SealedKey(ctx, room, 0); return err }},
			{"room.key epoch 1", func(c *client.Client, room string) error { _, err := c.SealedKey(ctx, room, 1); return err }},
		}
		for _, rd := range reads {
			for _, who := range []*client.Client{mallory, bob} {
				t.Run(rd.name+"/"+who.Identity().Endpoint, func(t *testing.T) {
					if err := rd.call(who, "private"); !errors.Is(err, client.ErrForbidden) {
						t.Fatalf("%s reads alice's private room: %v, want forbidden", who.Identity().Endpoint, err)
					}
				})
			}
			t.Run(rd.name+"/member", func(t *testing.T) {
				if err := rd.call(carol, "shared"); err != nil {
					t.Fatalf("member read: %v", err)
				}
			})
		}
	})

	t.Run("own directory only", func(t *testing.T) {
		rooms := func(c *client.Client) []string {
			p, err := c.MyRooms(ctx, "", 0)
			if err != nil {
				t.Fatalf("rooms of %s: %v", c.Identity().Endpoint, err)
			}
			var ids []string
			for _, r := range p.Rooms {
				ids = append(ids, r.ID)
			}
			slices.Sort(ids)
			return ids
		}
		for _, tt := range []struct {
			c    *client.Client
			want []string
		}{
			{alice, []string{"private", "shared"}},
			{bob, []string{"bobs", "shared"}},
			{carol, []string{"shared"}},
			{mallory, nil},
		} {
			if got := rooms(tt.c); !slices.Equal(got, tt.want) {
				t.Errorf("%s's rooms = %v, want %v", tt.c.Identity().Endpoint, got, tt.want)
			}
		}
		// room.mine has no field naming another endpoint: asking for one
		// is a malformed body.
		c := natstest.Connect(t, s)
		body := membertest.Body(t, map[string]any{"endpoint": "alice", "limit": 10})
		membertest.RequestOp(t, c, subjects.OpRoomMine, membertest.Signed(t, mallory.Identity().Sign, subjects.OpRoomMine, body)).
			Expect(t, subjects.CodeBadRequest, api.KindInvalid.Reason())
	})

	t.Run("removed member", func(t *testing.T) {
		if _, err := alice.RemoveMember(ctx, "shared", "carol"); err != nil {
			t.Fatalf("remove carol: %v", err)
		}
		if _, _, err := alice.Rekey(ctx, "shared"); err != nil {
			t.Fatalf("rekey: %v", err)
		}
		for _, epoch := range []uint64{0, 1, 2, 3} {
			if _, err := carol.SealedKey(ctx, "shared", epoch); !errors.Is(err, client.ErrForbidden) {
				t.Errorf("removed carol's key for epoch %d: %v, want forbidden", epoch, err)
			}
		}
		if _, err := carol.Room(ctx, "shared"); !errors.Is(err, client.ErrForbidden) {
			t.Errorf("removed carol reads the room: %v, want forbidden", err)
		}
		if _, err := carol.Members(ctx, "shared", "", 0); !errors.Is(err, client.ErrForbidden) {
			t.Errorf("removed carol lists members: %v, want forbidden", err)
		}
		// bob still gets his own key of the new epoch, and only his.
		k, err := bob.SealedKey(ctx, "shared", 2)
		if err != nil || k.Epoch != 2 {
			t.Fatalf("bob's epoch 2 key: %+v %v", k, err)
		}
		if _, err := bob.Identity().XKey.Open(k.Sealed, k.Sealer); err != nil {
			t.Fatalf("bob cannot open his key: %v", err)
		}
		if _, err := carol.Identity().XKey.Open(k.Sealed, k.Sealer); err == nil {
			t.Fatal("carol opens the key served to bob")
		}
	})
}

// TestAuditH6 checks that the owner of a room is its creator's signing
// identity: a body cannot name another owner or seal with another's key,
// and nobody but the owner may change the room.
func TestAuditH6(t *testing.T) {
	s, admin := membertest.Start(t, service.Config{})
	alice := membertest.Member(t, s, admin, "alice")
	bob := membertest.Member(t, s, admin, "bob")
	mallory := membertest.Member(t, s, admin, "mallory")
	nc := natstest.Connect(t, s)
	ctx := natstest.Ctx(t, 3)

	aliceX, _ := alice.Identity().XKey.PublicKey()
	malloryX, _ := mallory.Identity().XKey.PublicKey()
	sealed := []byte("sealed-room-key")
	t.Run("create in another's name", func(t *testing.T) {
		before := membertest.Dump(t, nc)
		members := []api.SealedKey{{Endpoint: "alice", Sealed: sealed}, {Endpoint: "mallory", Sealed: sealed}}
		tests := []struct {
			name string
			body any
		}{
			{"owner field", map[string]any{"id": "evil", "subject": "chat.evil", "sealer": malloryX, "owner": "alice",
				"members": []map[string]any{{"endpoint": "mallory", "sealed": sealed}}}},
			{"owner_key field", map[string]any{"id": "evil", "subject": "chat.evil", "sealer": malloryX, "owner_key": alice.Identity().Endpoint,
				"members": []map[string]any{{"endpoint": "mallory", "sealed": sealed}}}},
			{"sealed by alice's xkey", api.CreateRoomRequest{ID: "evil", Subject: "chat.evil", Sealer: aliceX, Members: members}},
			{"members without the signer", api.CreateRoomRequest{ID: "evil", Subject: "chat.evil", Sealer: malloryX,
				Members: []api.SealedKey{{Endpoint: "alice", Sealed: sealed}}}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				data := membertest.Signed(t, mallory.Identity().Sign, subjects.OpRoomCreate, membertest.Body(t, tt.body))
				membertest.RequestOp(t, nc, subjects.OpRoomCreate, data).Expect(t, subjects.CodeBadRequest, api.KindInvalid.Reason())
			})
		}
		membertest.SameDump(t, before, membertest.Dump(t, nc))
	})

	t.Run("owner is the signer", func(t *testing.T) {
		r, _, err := mallory.CreateRoom(ctx, "mine", "chat.mine", []string{"alice"})
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		if r.Owner != "mallory" || r.OwnerKey != must(mallory.Identity().Public()).SignKey {
			t.Fatalf("room owner %s key %s, want mallory's", r.Owner, r.OwnerKey)
		}
		// alice, a member of mallory's room, owns nothing in it.
		if _, err := alice.DeleteRoom(ctx, "mine"); !errors.Is(err, client.ErrForbidden) {
			t.Fatalf("member deletes the room: %v", err)
		}
	})

	if _, _, err := alice.CreateRoom(ctx, "r1", "chat.r1", []string{"bob"}); err != nil {
		t.Fatalf("create r1: %v", err)
	}
	t.Run("non-owner changes", func(t *testing.T) {
		before := membertest.Dump(t, nc)
		for _, who := range []*client.Client{bob, mallory} {
			x, _ := who.Identity().XKey.PublicKey()
			ops := []struct {
				op   subjects.Op
				body any
			}{
				{subjects.OpRoomAdd, api.AddMemberRequest{Room: "r1", Epoch: 1, Sealer: x, Member: api.SealedKey{Endpoint: "mallory", Sealed: sealed}}},
				{subjects.OpRoomRemove, api.RemoveMemberRequest{Room: "r1", Endpoint: "bob"}},
				{subjects.OpRoomRemove, api.RemoveMemberRequest{Room: "r1", Endpoint: "alice"}},
				{subjects.OpRoomRekey, api.RekeyRequest{Room: "r1", Epoch: 2, Sealer: x, Keys: []api.SealedKey{{Endpoint: "alice", Sealed: sealed}, {Endpoint: "bob", Sealed: sealed}}}},
				{subjects.OpRoomDelete, api.RoomRequest{Room: "r1"}},
			}
			for _, o := range ops {
				t.Run(who.Identity().Endpoint+"/"+string(o.op), func(t *testing.T) {
					err := who.Call(ctx, o.op, o.body, nil)
					if !errors.Is(err, client.ErrForbidden) {
						t.Fatalf("%s %s: %v, want forbidden", who.Identity().Endpoint, o.op, err)
					}
				})
			}
		}
		membertest.SameDump(t, before, membertest.Dump(t, nc))
	})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestAuditH7 checks that signers that are not active identities touch no
// nonce: an unregistered key's valid signed request is 401, a disabled
// identity's is 403, and neither writes a nonce. key to the bucket.
func TestAuditH7(t *testing.T) {
	s, admin := membertest.Start(t, service.Config{})
	alice := membertest.Member(t, s, admin, "alice")
	eve := membertest.Member(t, s, admin, "eve")
	nc := natstest.Connect(t, s)
	ctx := natstest.Ctx(t, 3)
	if _, _, err := alice.CreateRoom(ctx, "r1", "chat.r1", []string{"eve"}); err != nil {
		t.Fatalf("create: %v", err)
	}
	if _, err := admin.Disable(ctx, "eve"); err != nil {
		t.Fatalf("disable eve: %v", err)
	}
	aliceX, _ := alice.Identity().XKey.PublicKey()
	bodies := map[subjects.Op]any{
		subjects.OpWhoami:           api.Empty{},
		subjects.OpIdentityGet:      api.EndpointRequest{Endpoint: "alice"},
		subjects.OpIdentityRegister: api.RegisterRequest{Endpoint: "x", SignKey: must(alice.Identity().Public()).SignKey, XKey: aliceX, Admin: true},
		subjects.OpRoomGet:          api.RoomRequest{Room: "r1"},
		subjects.OpRoomKey:          api.KeyRequest{Room: "r1"},
		subjects.OpRoomCreate:       api.CreateRoomRequest{ID: "r2", Subject: "chat.r2", Sealer: aliceX, Members: []api.SealedKey{{Endpoint: "alice", Sealed: []byte("k")}}},
		subjects.OpRoomLeave:        api.RoomRequest{Room: "r1"},
		subjects.OpRoomMine:         api.PageRequest{},
	}
	stranger := func(t *testing.T) nkeys.KeyPair {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		return kp
	}
	tests := []struct {
		name   string
		kp     func(t *testing.T) nkeys.KeyPair
		code   int
		reason string
	}{
		{"unregistered key", stranger, subjects.CodeUnauthorized, api.KindUnauthenticated.Reason()},
		{"disabled identity", func(*testing.T) nkeys.KeyPair { return eve.Identity().Sign }, subjects.CodeForbidden, api.KindForbidden.Reason()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			beforeNonces, before := membertest.NonceKeys(t, nc), membertest.Dump(t, nc)
			for op, body := range bodies {
				for range 5 {
					data := membertest.Signed(t, tt.kp(t), op, membertest.Body(t, body))
					membertest.RequestOp(t, nc, op, data).Expect(t, tt.code, tt.reason)
				}
			}
			if after := membertest.NonceKeys(t, nc); !slices.Equal(beforeNonces, after) {
				t.Fatalf("nonce keys written for a signer that is not active: %d → %d", len(beforeNonces), len(after))
			}
			membertest.SameDump(t, before, membertest.Dump(t, nc))
		})
	}
	t.Run("active signer claims a nonce", func(t *testing.T) {
		// The check above can fail: a registered signer's read does write
		// exactly one nonce key.
		before := membertest.NonceKeys(t, nc)
		data := membertest.Signed(t, alice.Identity().Sign, subjects.OpWhoami, membertest.Body(t, api.Empty{}))
		membertest.RequestOp(t, nc, subjects.OpWhoami, data).Expect(t, 0, "")
		if after := membertest.NonceKeys(t, nc); len(after) != len(before)+1 {
			t.Fatalf("nonce keys %d → %d, want one more", len(before), len(after))
		}
	})
}
