package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/subjects"
)

// step runs one step of a sequence; the sequence stops at the first step
// that fails, since later steps build on it.
func step(t *testing.T, name string, f func(t *testing.T)) {
	t.Helper()
	if !t.Run(name, f) {
		t.FailNow()
	}
}

// TestRoomLifecycle walks a room through every operation with the client:
// create, read, page, add, keys per epoch, remove, rekey, leave, delete.
func TestRoomLifecycle(t *testing.T) {
	s, admin := membertest.Start(t, service.Config{})
	alice := membertest.Member(t, s, admin, "alice")
	bob := membertest.Member(t, s, admin, "bob")
	carol := membertest.Member(t, s, admin, "carol")
	dave := membertest.Member(t, s, admin, "dave")
	ctx := natstest.Ctx(t, 6)
	sealer, _ := alice.Identity().XKey.PublicKey()
	var key1, key2 []byte

	step(t, "create", func(t *testing.T) {
		r, k, err := alice.CreateRoom(ctx, "ops", "chat.ops", []string{"bob"})
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		key1 = k
		if r.ID != "ops" || r.Subject != "chat.ops" || r.Owner != "alice" || r.Epoch != 1 || r.Members != 2 || r.RekeyOwed || r.Deleted {
			t.Fatalf("room = %+v", r)
		}
		// The owner was not named, and is a member all the same.
		if ids := memberIDs(t, alice, "ops"); !slices.Equal(ids, []string{"alice", "bob"}) {
			t.Fatalf("members %v", ids)
		}
	})

	step(t, "create conflicts", func(t *testing.T) {
		tests := []struct {
			name    string
			c       *client.Client
			id, sub string
		}{
			{"subject taken, same owner", alice, "ops2", "chat.ops"},
			{"subject taken, other owner", bob, "bobs", "chat.ops"},
			{"id taken", alice, "ops", "chat.other"},
			{"id taken by another owner", carol, "ops", "chat.carol"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if _, _, err := tt.c.CreateRoom(ctx, tt.id, tt.sub, nil); !errors.Is(err, client.ErrExists) {
					t.Fatalf("create %s on %s: %v, want exists", tt.id, tt.sub, err)
				}
			})
		}
	})

	step(t, "get", func(t *testing.T) {
		for _, c := range []*client.Client{alice, bob} {
			r, err := c.Room(ctx, "ops")
			if err != nil || r.Owner != "alice" || r.Members != 2 || r.Epoch != 1 {
				t.Fatalf("%s reads %+v, %v", c.Identity().Endpoint, r, err)
			}
		}
		if _, err := alice.Room(ctx, "nope"); !errors.Is(err, client.ErrNotFound) {
			t.Fatalf("missing room: %v, want not found", err)
		}
	})

	step(t, "add with a stale or future epoch", func(t *testing.T) {
		pub, _ := carol.Identity().Public()
		sealed, err := alice.Identity().XKey.Seal(key1, pub.XKey)
		if err != nil {
			t.Fatal(err)
		}
		for _, epoch := range []uint64{0, 2} {
			err := alice.Call(ctx, subjects.OpRoomAdd, &api.AddMemberRequest{Room: "ops", Epoch: epoch, Sealer: sealer,
				Member: api.SealedKey{Endpoint: "carol", Sealed: sealed}}, nil)
			if !errors.Is(err, client.ErrConflict) {
				t.Fatalf("add at epoch %d: %v, want conflict", epoch, err)
			}
		}
	})

	step(t, "add", func(t *testing.T) {
		r, err := alice.AddMember(ctx, "ops", "carol")
		if err != nil || r.Members != 3 || r.Epoch != 1 {
			t.Fatalf("add carol: %+v, %v", r, err)
		}
		if _, err := alice.AddMember(ctx, "ops", "carol"); !errors.Is(err, client.ErrExists) {
			t.Fatalf("add carol again: %v, want exists", err)
		}
		if _, err := alice.AddMember(ctx, "ops", "nobody"); !errors.Is(err, client.ErrNotFound) {
			t.Fatalf("add an unregistered endpoint: %v, want not found", err)
		}
	})

	step(t, "members paginated", func(t *testing.T) {
		var got []string
		after := ""
		for pages := 0; ; pages++ {
			if pages > 3 {
				t.Fatalf("more than 3 pages of 1: %v", got)
			}
			p, err := bob.Members(ctx, "ops", after, 1)
			if err != nil {
				t.Fatalf("page after %q: %v", after, err)
			}
			if len(p.Members) > 1 {
				t.Fatalf("page of %d members with limit 1", len(p.Members))
			}
			for _, m := range p.Members {
				got = append(got, m.Endpoint)
				pub := must(map[string]*client.Client{"alice": alice, "bob": bob, "carol": carol}[m.Endpoint].Identity().Public())
				if m.SignKey != pub.SignKey || m.XKey != pub.XKey || m.Since != 1 {
					t.Fatalf("member %+v, want keys %+v since 1", m, pub)
				}
			}
			if p.Next == "" {
				break
			}
			after = p.Next
		}
		if !slices.Equal(got, []string{"alice", "bob", "carol"}) {
			t.Fatalf("paged members %v", got)
		}
	})

	step(t, "keys of epoch 1", func(t *testing.T) {
		for _, c := range []*client.Client{alice, bob, carol} {
			for _, epoch := range []uint64{0, 1} {
				k, e, err := c.Key(ctx, "ops", epoch)
				if err != nil || e != 1 || !bytes.Equal(k, key1) {
					t.Fatalf("%s key for epoch %d: epoch %d, %v", c.Identity().Endpoint, epoch, e, err)
				}
			}
			if _, err := c.SealedKey(ctx, "ops", 2); !errors.Is(err, client.ErrNotFound) {
				t.Fatalf("%s key for the future epoch 2: %v, want not found", c.Identity().Endpoint, err)
			}
		}
	})

	step(t, "remove", func(t *testing.T) {
		if _, err := alice.RemoveMember(ctx, "ops", "alice"); !errors.Is(err, client.ErrInvalid) {
			t.Fatalf("remove the owner: %v, want invalid", err)
		}
		if _, err := alice.RemoveMember(ctx, "ops", "dave"); !errors.Is(err, client.ErrNotFound) {
			t.Fatalf("remove a non-member: %v, want not found", err)
		}
		r, err := alice.RemoveMember(ctx, "ops", "carol")
		if err != nil || !r.RekeyOwed || r.Members != 2 || r.Epoch != 1 {
			t.Fatalf("remove carol: %+v, %v", r, err)
		}
		for _, epoch := range []uint64{0, 1, 2} {
			if _, err := carol.SealedKey(ctx, "ops", epoch); !errors.Is(err, client.ErrForbidden) {
				t.Fatalf("removed carol's key for epoch %d: %v, want forbidden", epoch, err)
			}
		}
	})

	step(t, "rekey with the wrong members", func(t *testing.T) {
		k, _ := client.NewRoomKey()
		seal := func(ids ...string) []api.SealedKey {
			var out []api.SealedKey
			for _, id := range ids {
				c := map[string]*client.Client{"alice": alice, "bob": bob, "carol": carol, "dave": dave}[id]
				sk, err := alice.Identity().XKey.Seal(k, must(c.Identity().Public()).XKey)
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, api.SealedKey{Endpoint: id, Sealed: sk})
			}
			return out
		}
		tests := []struct {
			name  string
			epoch uint64
			keys  []api.SealedKey
			want  error
		}{
			{"missing a member", 2, seal("alice"), client.ErrInvalid},
			{"removed member included", 2, seal("alice", "bob", "carol"), client.ErrInvalid},
			{"non-member included", 2, seal("alice", "bob", "dave"), client.ErrInvalid},
			{"member twice", 2, append(seal("alice", "bob"), seal("bob")...), client.ErrInvalid},
			{"epoch skipped", 3, seal("alice", "bob"), client.ErrConflict},
			{"epoch repeated", 1, seal("alice", "bob"), client.ErrConflict},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				err := alice.Call(ctx, subjects.OpRoomRekey, &api.RekeyRequest{Room: "ops", Epoch: tt.epoch, Sealer: sealer, Keys: tt.keys}, nil)
				if !errors.Is(err, tt.want) {
					t.Fatalf("rekey: %v, want %v", err, tt.want)
				}
			})
		}
		if r, err := alice.Room(ctx, "ops"); err != nil || r.Epoch != 1 || !r.RekeyOwed {
			t.Fatalf("room after refused rekeys: %+v, %v", r, err)
		}
	})

	step(t, "rekey", func(t *testing.T) {
		r, k, err := alice.Rekey(ctx, "ops")
		if err != nil || r.Epoch != 2 || r.RekeyOwed || r.Members != 2 {
			t.Fatalf("rekey: %+v, %v", r, err)
		}
		key2 = k
		if bytes.Equal(key1, key2) {
			t.Fatal("the rekey kept the key")
		}
		for _, c := range []*client.Client{alice, bob} {
			got, e, err := c.Key(ctx, "ops", 0)
			if err != nil || e != 2 || !bytes.Equal(got, key2) {
				t.Fatalf("%s current key: epoch %d, %v", c.Identity().Endpoint, e, err)
			}
			if got, _, err := c.Key(ctx, "ops", 1); err != nil || !bytes.Equal(got, key1) {
				t.Fatalf("%s epoch 1 key: %v", c.Identity().Endpoint, err)
			}
		}
		for _, epoch := range []uint64{0, 1, 2} {
			if _, err := carol.SealedKey(ctx, "ops", epoch); !errors.Is(err, client.ErrForbidden) {
				t.Fatalf("removed carol's key for epoch %d after the rekey: %v, want forbidden", epoch, err)
			}
		}
		// A key sealed for epoch 1 cannot be added any more.
		sealed, _ := alice.Identity().XKey.Seal(key1, must(dave.Identity().Public()).XKey)
		err = alice.Call(ctx, subjects.OpRoomAdd, &api.AddMemberRequest{Room: "ops", Epoch: 1, Sealer: sealer,
			Member: api.SealedKey{Endpoint: "dave", Sealed: sealed}}, nil)
		if !errors.Is(err, client.ErrConflict) {
			t.Fatalf("add with an epoch 1 key: %v, want conflict", err)
		}
	})

	step(t, "member added at epoch 2", func(t *testing.T) {
		if _, err := alice.AddMember(ctx, "ops", "dave"); err != nil {
			t.Fatalf("add dave: %v", err)
		}
		got, e, err := dave.Key(ctx, "ops", 0)
		if err != nil || e != 2 || !bytes.Equal(got, key2) {
			t.Fatalf("dave's key: epoch %d, %v", e, err)
		}
		if _, err := dave.SealedKey(ctx, "ops", 1); !errors.Is(err, client.ErrForbidden) {
			t.Fatalf("dave's key for epoch 1: %v, want forbidden", err)
		}
	})

	step(t, "leave", func(t *testing.T) {
		if _, err := alice.Leave(ctx, "ops"); !errors.Is(err, client.ErrInvalid) {
			t.Fatalf("owner leaves: %v, want invalid", err)
		}
		if _, err := carol.Leave(ctx, "ops"); !errors.Is(err, client.ErrForbidden) {
			t.Fatalf("non-member leaves: %v, want forbidden", err)
		}
		r, err := bob.Leave(ctx, "ops")
		if err != nil || r.Members != 2 || !r.RekeyOwed {
			t.Fatalf("bob leaves: %+v, %v", r, err)
		}
		if _, err := bob.Room(ctx, "ops"); !errors.Is(err, client.ErrForbidden) {
			t.Fatalf("bob reads after leaving: %v, want forbidden", err)
		}
		if mine, err := bob.MyRooms(ctx, "", 0); err != nil || len(mine.Rooms) != 0 {
			t.Fatalf("bob's rooms after leaving: %+v, %v", mine, err)
		}
		if ids := memberIDs(t, alice, "ops"); !slices.Equal(ids, []string{"alice", "dave"}) {
			t.Fatalf("members %v", ids)
		}
	})

	step(t, "delete", func(t *testing.T) {
		if _, err := dave.DeleteRoom(ctx, "ops"); !errors.Is(err, client.ErrForbidden) {
			t.Fatalf("member deletes: %v, want forbidden", err)
		}
		r, err := alice.DeleteRoom(ctx, "ops")
		if err != nil || !r.Deleted {
			t.Fatalf("delete: %+v, %v", r, err)
		}
		for _, c := range []*client.Client{alice, dave} {
			if _, err := c.Room(ctx, "ops"); !errors.Is(err, client.ErrNotFound) {
				t.Fatalf("%s reads the deleted room: %v, want not found", c.Identity().Endpoint, err)
			}
			if _, err := c.SealedKey(ctx, "ops", 0); !errors.Is(err, client.ErrNotFound) {
				t.Fatalf("%s key of the deleted room: %v, want not found", c.Identity().Endpoint, err)
			}
			if mine, err := c.MyRooms(ctx, "", 0); err != nil || len(mine.Rooms) != 0 {
				t.Fatalf("%s's rooms after delete: %+v, %v", c.Identity().Endpoint, mine, err)
			}
		}
		if _, err := alice.DeleteRoom(ctx, "ops"); !errors.Is(err, client.ErrNotFound) {
			t.Fatalf("delete again: %v, want not found", err)
		}
		// The subject is free again; the id stays taken by the tombstone.
		r2, _, err := bob.CreateRoom(ctx, "ops-next", "chat.ops", nil)
		if err != nil || r2.Owner != "bob" || r2.Subject != "chat.ops" {
			t.Fatalf("reuse the subject: %+v, %v", r2, err)
		}
		if _, _, err := alice.CreateRoom(ctx, "ops", "chat.fresh", nil); !errors.Is(err, client.ErrExists) {
			t.Fatalf("reuse the deleted id: %v, want exists", err)
		}
	})
}

// eventually retries f until it returns nil or the deadline passes. The
// identity cache may serve a change up to IdentityMaxStale (2 s by default)
// late; 5 s bounds that with room to spare.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestIdentityAdmin covers the identity operations: only admins register,
// disable, enable and list; any active identity looks up public keys and
// itself; a disabled identity is refused everything.
func TestIdentityAdmin(t *testing.T) {
	s, admin := membertest.Start(t, service.Config{})
	alice := membertest.Member(t, s, admin, "alice")
	bob := membertest.Member(t, s, admin, "bob")
	ctx := natstest.Ctx(t, 6)
	if _, _, err := alice.CreateRoom(ctx, "r1", "chat.r1", []string{"bob"}); err != nil {
		t.Fatalf("create: %v", err)
	}

	t.Run("whoami", func(t *testing.T) {
		for _, tt := range []struct {
			c     *client.Client
			admin bool
		}{{admin, true}, {alice, false}} {
			id, err := tt.c.Whoami(ctx)
			pub := must(tt.c.Identity().Public())
			if err != nil || id.Endpoint != pub.Endpoint || id.SignKey != pub.SignKey || id.XKey != pub.XKey || id.Admin != tt.admin || id.Disabled {
				t.Fatalf("whoami = %+v, %v", id, err)
			}
		}
	})

	frank, err := identity.New("frank")
	if err != nil {
		t.Fatal(err)
	}
	frankPub := must(frank.Public())

	t.Run("non-admin", func(t *testing.T) {
		calls := map[string]func() error{
			"register": func() error { _, err := alice.Register(ctx, frankPub, false); return err },
			"register self as admin": func() error {
				_, err := alice.Register(ctx, must(alice.Identity().Public()), true)
				return err
			},
			"disable": func() error { _, err := alice.Disable(ctx, "bob"); return err },
			"enable":  func() error { _, err := alice.Enable(ctx, "bob"); return err },
			"list":    func() error { _, err := alice.Identities(ctx, "", 0); return err },
		}
		for name, call := range calls {
			t.Run(name, func(t *testing.T) {
				if err := call(); !errors.Is(err, client.ErrForbidden) {
					t.Fatalf("%v, want forbidden", err)
				}
			})
		}
		if _, err := admin.Lookup(ctx, "frank"); !errors.Is(err, client.ErrNotFound) {
			t.Fatalf("frank got registered: %v", err)
		}
	})

	t.Run("register and look up", func(t *testing.T) {
		id, err := admin.Register(ctx, frankPub, false)
		if err != nil || id.Endpoint != "frank" || id.SignKey != frankPub.SignKey || id.Admin || id.Disabled {
			t.Fatalf("register: %+v, %v", id, err)
		}
		got, err := alice.Lookup(ctx, "frank")
		if err != nil || *got != frankPub {
			t.Fatalf("lookup: %+v, %v", got, err)
		}
		if _, err := alice.Lookup(ctx, "nobody"); !errors.Is(err, client.ErrNotFound) {
			t.Fatalf("lookup of nobody: %v", err)
		}
		// One signing key, one endpoint.
		if _, err := admin.Register(ctx, api.PublicKeys{Endpoint: "frank2", SignKey: frankPub.SignKey, XKey: frankPub.XKey}, false); !errors.Is(err, client.ErrExists) {
			t.Fatalf("register frank's key for another endpoint: %v, want exists", err)
		}
		fc := client.New(natstest.Connect(t, s), frank)
		if me, err := fc.Whoami(ctx); err != nil || me.Endpoint != "frank" {
			t.Fatalf("frank's whoami: %+v, %v", me, err)
		}
	})

	t.Run("list paginated", func(t *testing.T) {
		var got []string
		after := ""
		for range 10 {
			p, err := admin.Identities(ctx, after, 2)
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range p.Identities {
				got = append(got, id.Endpoint)
			}
			if p.Next == "" {
				break
			}
			after = p.Next
		}
		if want := []string{"admin", "alice", "bob", "frank"}; !slices.Equal(got, want) {
			t.Fatalf("identities %v, want %v", got, want)
		}
	})

	t.Run("disabled identity", func(t *testing.T) {
		id, err := admin.Disable(ctx, "bob")
		if err != nil || !id.Disabled {
			t.Fatalf("disable: %+v, %v", id, err)
		}
		if p, err := alice.Lookup(ctx, "bob"); err != nil || !p.Disabled {
			t.Fatalf("lookup of disabled bob: %+v, %v", p, err)
		}
		eventually(t, "bob's whoami after disable", func() error {
			if _, err := bob.Whoami(ctx); !errors.Is(err, client.ErrForbidden) {
				return fmt.Errorf("whoami: %v, want forbidden", err)
			}
			return nil
		})
		calls := map[string]func() error{
			"whoami":  func() error { _, err := bob.Whoami(ctx); return err },
			"lookup":  func() error { _, err := bob.Lookup(ctx, "alice"); return err },
			"get":     func() error { _, err := bob.Room(ctx, "r1"); return err },
			"members": func() error { _, err := bob.Members(ctx, "r1", "", 0); return err },
			"key":     func() error { _, err := bob.SealedKey(ctx, "r1", 0); return err },
			"mine":    func() error { _, err := bob.MyRooms(ctx, "", 0); return err },
			"leave":   func() error { _, err := bob.Leave(ctx, "r1"); return err },
			"create": func() error {
				return bob.Call(ctx, subjects.OpRoomCreate, &api.CreateRoomRequest{ID: "b", Subject: "chat.b",
					Sealer: must(bob.Identity().Public()).XKey, Members: []api.SealedKey{{Endpoint: "bob", Sealed: []byte("k")}}}, nil)
			},
		}
		for name, call := range calls {
			t.Run(name, func(t *testing.T) {
				if err := call(); !errors.Is(err, client.ErrForbidden) {
					t.Fatalf("%v, want forbidden", err)
				}
			})
		}
		// Nobody can add a disabled identity to a room.
		if _, _, err := alice.CreateRoom(ctx, "r2", "chat.r2", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.AddMember(ctx, "r2", "bob"); !errors.Is(err, client.ErrInvalid) {
			t.Fatalf("add disabled bob: %v, want invalid", err)
		}
		if _, err := admin.Disable(ctx, "admin"); !errors.Is(err, client.ErrInvalid) {
			t.Fatalf("admin disables itself: %v, want invalid", err)
		}
	})

	t.Run("enabled again", func(t *testing.T) {
		if id, err := admin.Enable(ctx, "bob"); err != nil || id.Disabled {
			t.Fatalf("enable: %+v, %v", id, err)
		}
		eventually(t, "bob's read after enable", func() error {
			_, err := bob.Room(ctx, "r1")
			return err
		})
		if _, err := bob.Whoami(ctx); err != nil {
			t.Fatalf("whoami: %v", err)
		}
	})
}

// TestConcurrentAdds has 8 goroutines add distinct members to one room at
// once through two replicas. Every add that is acknowledged must be in the
// room: no lost update between replicas.
func TestConcurrentAdds(t *testing.T) {
	const n = 8
	s := natstest.Server(t)
	membertest.Service(t, s, service.Config{})
	membertest.Service(t, s, service.Config{})
	admin := membertest.Admin(t, s)
	alice := membertest.Member(t, s, admin, "alice")
	members := make([]string, n)
	clients := make([]*client.Client, n)
	for i := range n {
		members[i] = fmt.Sprintf("m%d", i)
		clients[i] = membertest.Member(t, s, admin, members[i])
	}
	ctx := natstest.Ctx(t, 6)
	_, key, err := alice.CreateRoom(ctx, "busy", "chat.busy", nil)
	if err != nil {
		t.Fatalf("create: %v", err)
	}

	var (
		mu        sync.Mutex
		acked     []string
		conflicts int
		errs      []error
		wg        sync.WaitGroup
		start     = make(chan struct{})
	)
	for _, m := range members {
		c := client.New(natstest.Connect(t, s), alice.Identity())
		wg.Go(func() {
			<-start
			for attempt := 0; ; attempt++ {
				_, err := c.AddMember(ctx, "busy", m)
				mu.Lock()
				switch {
				case err == nil:
					acked = append(acked, m)
				case errors.Is(err, client.ErrConflict) && attempt < 20:
					conflicts++ // lost the compare-and-set more often than the service retries
					mu.Unlock()
					continue
				default:
					errs = append(errs, fmt.Errorf("add %s: %w", m, err))
				}
				mu.Unlock()
				return
			}
		})
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	t.Logf("%d adds acknowledged, %d conflicts seen by the clients", len(acked), conflicts)
	r, err := alice.Room(ctx, "busy")
	if err != nil {
		t.Fatal(err)
	}
	if r.Members != 1+len(acked) || len(acked) != n {
		t.Fatalf("room has %d members, %d adds acknowledged of %d", r.Members, len(acked), n)
	}
	want := append([]string{"alice"}, members...)
	slices.Sort(want)
	if ids := memberIDs(t, alice, "busy"); !slices.Equal(ids, want) {
		t.Fatalf("members %v, want %v", ids, want)
	}
	for _, c := range clients {
		if k, _, err := c.Key(ctx, "busy", 0); err != nil || !bytes.Equal(k, key) {
			t.Fatalf("%s's key: %v", c.Identity().Endpoint, err)
		}
	}
}
