package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/subjects"
)

// requests returns how many requests svc's endpoint for op has handled.
func requests(t *testing.T, svc *service.Service, op subjects.Op) uint64 {
	t.Helper()
	for _, e := range svc.Micro().Stats().Endpoints {
		if e.Name == op.EndpointName() {
			return uint64(e.NumRequests)
		}
	}
	t.Fatalf("no endpoint %s", op.EndpointName())
	return 0
}

// waitRequests waits until svc's endpoint for op has handled want
// requests: micro counts a request after its reply went out.
func waitRequests(t *testing.T, svc *service.Service, op subjects.Op, want uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := requests(t, svc, op)
		if got == want {
			return
		}
		if got > want || time.Now().After(deadline) {
			t.Fatalf("replica handled %d %s, want %d", got, op, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// addRequest builds alice's signed room.add of endpoint to room at epoch 1,
// the room key sealed to the endpoint's xkey, with the given nonce.
func addRequest(t *testing.T, owner, member *client.Client, room string, key, nonce []byte) []byte {
	t.Helper()
	sealer, _ := owner.Identity().XKey.PublicKey()
	pub, _ := member.Identity().Public()
	sealed, err := owner.Identity().XKey.Seal(key, pub.XKey)
	if err != nil {
		t.Fatal(err)
	}
	body := membertest.Body(t, api.AddMemberRequest{Room: room, Epoch: 1, Sealer: sealer,
		Member: api.SealedKey{Endpoint: member.Identity().Endpoint, Sealed: sealed}})
	subject := subjects.Subject(subjects.DefaultPrefix, subjects.OpRoomAdd)
	return membertest.Marshal(t, membertest.Envelope(t, owner.Identity().Sign, subject, time.Now(), nonce, body))
}

// memberIDs lists a room's members as c sees them.
func memberIDs(t *testing.T, c *client.Client, room string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), natstest.Patience)
	defer cancel()
	ms, err := c.AllMembers(ctx, room)
	if err != nil {
		t.Fatalf("members of %s: %v", room, err)
	}
	var ids []string
	for _, m := range ms {
		ids = append(ids, m.Endpoint)
	}
	slices.Sort(ids)
	return ids
}

// TestReplayAcrossReplicas captures signed requests answered by one
// replica and replays them to others: the nonce claim is shared through
// JetStream KV, so a replayed read is 401 replay on every replica, and a
// replayed mutation is 208 already applied with the original reply,
// applied once. Another request reusing the nonce is 401 replay.
func TestReplayAcrossReplicas(t *testing.T) {
	s := natstest.Server(t)
	a := membertest.Service(t, s, service.Config{})
	admin := membertest.Admin(t, s)
	alice := membertest.Member(t, s, admin, "alice")
	bob := membertest.Member(t, s, admin, "bob")
	carol := membertest.Member(t, s, admin, "carol")
	dave := membertest.Member(t, s, admin, "dave")
	nc := natstest.Connect(t, s)
	ctx := natstest.Ctx(t, 3)
	_, key, err := alice.CreateRoom(ctx, "r1", "chat.r1", []string{"bob"})
	if err != nil {
		t.Fatalf("create: %v", err)
	}

	// Phase 1: only A runs. Capture one read and one mutation.
	read := membertest.Signed(t, bob.Identity().Sign, subjects.OpRoomGet, membertest.Body(t, api.RoomRequest{Room: "r1"}))
	membertest.RequestOp(t, nc, subjects.OpRoomGet, read).Expect(t, 0, "")
	mutNonce := membertest.Nonce(t)
	mutation := addRequest(t, alice, carol, "r1", key, mutNonce)
	first := membertest.RequestOp(t, nc, subjects.OpRoomAdd, mutation)
	first.Expect(t, 0, "")
	var applied api.Room
	first.Decode(t, &applied)
	if applied.Members != 3 {
		t.Fatalf("room after add = %+v", applied)
	}

	// Phase 2: B starts, A stops. Every replay reaches B.
	b := membertest.Service(t, s, service.Config{})
	aID := a.Micro().Info().ID
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	membertest.WaitGone(t, nc, aID)
	t.Run("read replayed to another replica", func(t *testing.T) {
		before := requests(t, b, subjects.OpRoomGet)
		membertest.RequestOp(t, nc, subjects.OpRoomGet, read).Expect(t, subjects.CodeUnauthorized, api.KindReplay.Reason())
		waitRequests(t, b, subjects.OpRoomGet, before+1)
	})
	t.Run("mutation replayed to another replica", func(t *testing.T) {
		before := requests(t, b, subjects.OpRoomAdd)
		r := membertest.RequestOp(t, nc, subjects.OpRoomAdd, mutation)
		r.Expect(t, subjects.CodeAlreadyApplied, api.KindAlreadyApplied.Reason())
		if !bytes.Equal(r.Data, first.Data) {
			t.Fatalf("already-applied body %x, want the original reply %x", r.Data, first.Data)
		}
		waitRequests(t, b, subjects.OpRoomAdd, before+1)
	})

	// Phase 3: C and D start, B stops: the queue group spreads the replays
	// over two fresh replicas.
	c := membertest.Service(t, s, service.Config{})
	d := membertest.Service(t, s, service.Config{})
	bID := b.Micro().Info().ID
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	membertest.WaitGone(t, nc, bID)
	t.Run("replays to restarted replicas", func(t *testing.T) {
		before := membertest.Dump(t, nc)
		for range 8 {
			membertest.RequestOp(t, nc, subjects.OpRoomGet, read).Expect(t, subjects.CodeUnauthorized, api.KindReplay.Reason())
			r := membertest.RequestOp(t, nc, subjects.OpRoomAdd, mutation)
			r.Expect(t, subjects.CodeAlreadyApplied, api.KindAlreadyApplied.Reason())
			var got api.Room
			r.Decode(t, &got)
			if got != applied {
				t.Fatalf("already-applied reply %+v, want %+v", got, applied)
			}
		}
		membertest.SameDump(t, before, membertest.Dump(t, nc))
		deadline := time.Now().Add(5 * time.Second)
		for requests(t, c, subjects.OpRoomAdd)+requests(t, d, subjects.OpRoomAdd) != 8 {
			if time.Now().After(deadline) {
				t.Fatalf("replicas C and D handled %d room.add, want 8", requests(t, c, subjects.OpRoomAdd)+requests(t, d, subjects.OpRoomAdd))
			}
			time.Sleep(5 * time.Millisecond)
		}
	})

	t.Run("other requests reusing a nonce", func(t *testing.T) {
		before := membertest.Dump(t, nc)
		subject := func(op subjects.Op) string { return subjects.Subject(subjects.DefaultPrefix, op) }
		// Another mutation with the nonce of the applied one.
		membertest.RequestOp(t, nc, subjects.OpRoomAdd, addRequest(t, alice, dave, "r1", key, mutNonce)).
			Expect(t, subjects.CodeUnauthorized, api.KindReplay.Reason())
		// A read with the nonce of the applied mutation is that nonce's
		// first read: reads and mutations claim nonces apart
		// (docs/protocol.md §9). Sent again, on any replica, it is a
		// replay.
		readWithMutNonce := membertest.Marshal(t, membertest.Envelope(t, alice.Identity().Sign,
			subject(subjects.OpRoomGet), time.Now(), mutNonce, membertest.Body(t, api.RoomRequest{Room: "r1"})))
		membertest.RequestOp(t, nc, subjects.OpRoomGet, readWithMutNonce).Expect(t, 0, "")
		for range 4 {
			membertest.RequestOp(t, nc, subjects.OpRoomGet, readWithMutNonce).Expect(t, subjects.CodeUnauthorized, api.KindReplay.Reason())
		}
		// A delete with that nonce: it would destroy the room if accepted.
		membertest.RequestOp(t, nc, subjects.OpRoomDelete, membertest.Marshal(t, membertest.Envelope(t, alice.Identity().Sign,
			subject(subjects.OpRoomDelete), time.Now(), mutNonce, membertest.Body(t, api.RoomRequest{Room: "r1"})))).
			Expect(t, subjects.CodeUnauthorized, api.KindReplay.Reason())
		membertest.SameDump(t, before, membertest.Dump(t, nc))
	})

	t.Run("applied once", func(t *testing.T) {
		if got, want := memberIDs(t, alice, "r1"), []string{"alice", "bob", "carol"}; !slices.Equal(got, want) {
			t.Fatalf("members %v, want %v", got, want)
		}
		r, err := alice.Room(ctx, "r1")
		if err != nil || r.Members != 3 || r.Epoch != 1 {
			t.Fatalf("room = %+v, %v", r, err)
		}
		got, epoch, err := carol.Key(ctx, "r1", 0)
		if err != nil || epoch != 1 || !bytes.Equal(got, key) {
			t.Fatalf("carol's key: epoch %d %v", epoch, err)
		}
		if _, err := dave.Room(ctx, "r1"); !errors.Is(err, client.ErrForbidden) {
			t.Fatalf("dave reads r1: %v, want forbidden", err)
		}
	})
}

// TestSameMutationRace sends copies of one signed mutation at once to four
// replicas, round after round: one copy commits and every other copy must
// be answered 208 from the nonce record (a 503 is resent, as a client
// would; it must then learn the same), including a copy that checked the
// nonce before the winner committed and planned after it (the plan then
// sees "already a member", but the request was applied, not refused).
func TestSameMutationRace(t *testing.T) {
	const (
		replicas = 4
		rounds   = 12
		copies   = 8
	)
	s := natstest.Server(t)
	for range replicas {
		membertest.Service(t, s, service.Config{})
	}
	admin := membertest.Admin(t, s)
	alice := membertest.Member(t, s, admin, "alice")
	nc := natstest.Connect(t, s)
	ctx := natstest.Ctx(t, 3)
	_, key, err := alice.CreateRoom(ctx, "r1", "chat.r1", nil)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	subject := subjects.Subject(subjects.DefaultPrefix, subjects.OpRoomAdd)
	for round := range rounds {
		member := membertest.Member(t, s, admin, fmt.Sprintf("m%d", round))
		data := addRequest(t, alice, member, "r1", key, membertest.Nonce(t))
		replies := make(chan *nats.Msg, copies)
		start := make(chan struct{})
		for range copies {
			go func() {
				<-start
				replies <- requestUntilAnswered(nc, subject, data)
			}()
		}
		close(start)
		codes := map[int]int{}
		for range copies {
			msg := <-replies
			if msg == nil {
				codes[-1]++
				continue
			}
			codes[membertest.ReplyOf(t, msg).Code]++
		}
		if codes[0] != 1 || codes[subjects.CodeAlreadyApplied] != copies-1 {
			t.Fatalf("round %d: codes %v, want one success and %d already applied", round, codes, copies-1)
		}
	}
	r, err := alice.Room(ctx, "r1")
	if err != nil || r.Members != 1+rounds {
		t.Fatalf("room = %+v, %v; want %d members", r, err, 1+rounds)
	}
}

// requestUntilAnswered sends data and, while the service answers 503 (a
// replica too loaded to finish within the request's deadline: the outcome
// is open), resends the very same bytes as a client would; nil is no reply.
func requestUntilAnswered(nc *nats.Conn, subject string, data []byte) *nats.Msg {
	for range 5 {
		msg, err := nc.Request(subject, data, natstest.Patience)
		if err != nil {
			return nil
		}
		if msg.Header.Get(micro.ErrorCodeHeader) != strconv.Itoa(subjects.CodeUnavailable) {
			return msg
		}
	}
	return nil
}

// TestLostReply sends a mutation whose reply nobody receives; once the
// state shows it applied, the very same bytes are answered 208 with the
// original outcome and nothing is applied twice.
func TestLostReply(t *testing.T) {
	s := natstest.Server(t)
	replicas := []*service.Service{membertest.Service(t, s, service.Config{}), membertest.Service(t, s, service.Config{})}
	admin := membertest.Admin(t, s)
	alice := membertest.Member(t, s, admin, "alice")
	carol := membertest.Member(t, s, admin, "carol")
	nc := natstest.Connect(t, s)
	ctx := natstest.Ctx(t, 3)
	_, key, err := alice.CreateRoom(ctx, "r1", "chat.r1", nil)
	if err != nil {
		t.Fatalf("create: %v", err)
	}

	t.Run("raw", func(t *testing.T) {
		data := addRequest(t, alice, carol, "r1", key, membertest.Nonce(t))
		if err := nc.PublishRequest(subjects.Subject(subjects.DefaultPrefix, subjects.OpRoomAdd), "lost.reply."+nats.NewInbox(), data); err != nil {
			t.Fatal(err)
		}
		kv := membertest.RoomKV(t, nc, "r1")
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, err := kv.Get(ctx, "member.r1.carol"); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the lost-reply mutation was never applied")
			}
			time.Sleep(10 * time.Millisecond)
		}
		before := membertest.Dump(t, nc)
		r := membertest.RequestOp(t, nc, subjects.OpRoomAdd, data)
		r.Expect(t, subjects.CodeAlreadyApplied, api.KindAlreadyApplied.Reason())
		var got api.Room
		r.Decode(t, &got)
		if got.ID != "r1" || got.Members != 2 || got.Epoch != 1 {
			t.Fatalf("original outcome = %+v", got)
		}
		membertest.SameDump(t, before, membertest.Dump(t, nc))
		if ids := memberIDs(t, alice, "r1"); !slices.Equal(ids, []string{"alice", "carol"}) {
			t.Fatalf("members %v", ids)
		}
		// The client library turns 208 into success: carol opens her key.
		if k, _, err := carol.Key(ctx, "r1", 0); err != nil || !bytes.Equal(k, key) {
			t.Fatalf("carol's key: %v", err)
		}
	})

	t.Run("client retries after a lost reply", func(t *testing.T) {
		// The client talks through a proxy that holds every reply until
		// the mutation is applied and the first attempt has timed out:
		// that reply is lost, the client resends the same signed request
		// and must report the original outcome as success, applied once.
		dave := membertest.Member(t, s, admin, "dave")
		proxy := natstest.NewProxy(t, s)
		pnc, err := nats.Connect(proxy.URL, nats.NoReconnect())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pnc.Close)
		const attempt = 300 * time.Millisecond
		impatient := client.New(pnc, alice.Identity(),
			client.WithTimeout(attempt), client.WithRetries(3), client.WithBackoff(10*time.Millisecond))
		pub, _ := dave.Identity().Public()
		sealed, err := alice.Identity().XKey.Seal(key, pub.XKey)
		if err != nil {
			t.Fatal(err)
		}
		sealer, _ := alice.Identity().XKey.PublicKey()
		appliedBefore := alreadyApplied(t, replicas)

		kv := membertest.RoomKV(t, nc, "r1")
		proxy.Hold()
		released := make(chan error, 1)
		go func() {
			deadline := time.Now().Add(10 * time.Second)
			for {
				if _, err := kv.Get(ctx, "member.r1.dave"); err == nil {
					break
				}
				if time.Now().After(deadline) {
					proxy.Release()
					released <- errors.New("the mutation was never applied")
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(attempt + 50*time.Millisecond) // the first attempt gives up
			proxy.Release()
			released <- nil
		}()
		var out api.Room
		err = impatient.Call(ctx, subjects.OpRoomAdd, &api.AddMemberRequest{Room: "r1", Epoch: 1, Sealer: sealer,
			Member: api.SealedKey{Endpoint: "dave", Sealed: sealed}}, &out)
		if rerr := <-released; rerr != nil {
			t.Fatal(rerr)
		}
		if err != nil {
			t.Fatalf("add through a lost reply: %v", err)
		}
		if out.ID != "r1" || out.Members != 3 {
			t.Fatalf("room = %+v, want r1 with 3 members", out)
		}
		if n := alreadyApplied(t, replicas) - appliedBefore; n < 1 {
			t.Fatalf("no attempt was answered already-applied (%d): the reply was not lost", n)
		}
		if ids := memberIDs(t, alice, "r1"); !slices.Equal(ids, []string{"alice", "carol", "dave"}) {
			t.Fatalf("members %v", ids)
		}
		if k, _, err := dave.Key(ctx, "r1", 0); err != nil || !bytes.Equal(k, key) {
			t.Fatalf("dave's key: %v", err)
		}
	})
}

// alreadyApplied sums the room.add already-applied counts of the replicas'
// stats.
func alreadyApplied(t *testing.T, replicas []*service.Service) int {
	t.Helper()
	var n int
	for _, svc := range replicas {
		for _, e := range svc.Micro().Stats().Endpoints {
			var d struct {
				AlreadyApplied int `json:"already_applied"`
			}
			if e.Name != subjects.OpRoomAdd.EndpointName() {
				continue
			}
			if err := json.Unmarshal(e.Data, &d); err != nil {
				t.Fatalf("stats data of %s: %v", e.Name, err)
			}
			n += d.AlreadyApplied
		}
	}
	return n
}
