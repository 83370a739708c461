package service_test

import (
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/envelope"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/subjects"
)

// kvWrites counts publishes to the KV bucket's subjects seen by a passive
// subscriber — write attempts, accepted or not. Nothing else writes: the
// identity cache proves its freshness by reading (cache.go).
func kvWrites(t *testing.T, e *env) func() int64 {
	t.Helper()
	nc := natstest.Connect(t, e.s)
	var n, seen atomic.Int64
	sub, err := nc.Subscribe("$KV."+subjects.DefaultBucket+".>", func(*nats.Msg) {
		n.Add(1)
		seen.Add(1)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return func() int64 {
		t.Helper()
		for _, c := range []*nats.Conn{e.nc, nc} {
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
		}
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(5 * time.Millisecond) {
			pending, _, _ := sub.Pending()
			delivered, _ := sub.Delivered()
			if pending == 0 && delivered == seen.Load() {
				return n.Load()
			}
			if time.Now().After(deadline) {
				t.Fatal("counter never drained")
			}
		}
	}
}

func nonceOf(t *testing.T, data []byte) []byte {
	t.Helper()
	en, err := envelope.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	return en.Nonce
}

// TestReplayCacheAnswersRepeats: after the first claim, copies of a read
// are refused as replays and copies of a mutation answered "already
// applied" with the original reply — from memory, with no KV write.
func TestReplayCacheAnswersRepeats(t *testing.T) {
	e := newEnv(t, service.Config{})
	alice := e.register(t, "alice")

	read := sign(t, alice.Sign, e.subject(subjects.OpWhoami), api.Empty{}, signOpts{})
	request(t, e.nc, e.subject(subjects.OpWhoami), read).expect(t, api.KindOther)
	aliceXKey, _ := alice.XKey.PublicKey()
	create := sign(t, alice.Sign, e.subject(subjects.OpRoomCreate), api.CreateRoomRequest{
		ID: "r1", Subject: "chat.r1", Sealer: aliceXKey,
		Members: []api.SealedKey{{Endpoint: "alice", Sealed: []byte("sealed")}},
	}, signOpts{})
	first := request(t, e.nc, e.subject(subjects.OpRoomCreate), create)
	first.expect(t, api.KindOther)

	before := membertest.Keys(t, e.nc)
	writes := kvWrites(t, e)
	w0 := writes()
	for range 20 {
		request(t, e.nc, e.subject(subjects.OpWhoami), read).expect(t, api.KindReplay)
		again := request(t, e.nc, e.subject(subjects.OpRoomCreate), create)
		again.expect(t, api.KindAlreadyApplied)
		if string(again.data) != string(first.data) {
			t.Fatal("already-applied reply differs from the original")
		}
	}
	if w := writes() - w0; w != 0 {
		t.Fatalf("40 repeats made %d KV write attempts", w)
	}
	if after := membertest.Keys(t, e.nc); len(after) != len(before) {
		t.Fatalf("keys %d → %d", len(before), len(after))
	}
	// Another request reusing a claimed nonce is refused too, before its
	// (here: invalid) signature is even checked.
	reused := sign(t, alice.Sign, e.subject(subjects.OpWhoami), api.Empty{}, signOpts{nonce: nonceOf(t, read), after: func(en *envelope.Envelope) { en.Sig[0] ^= 1 }})
	request(t, e.nc, e.subject(subjects.OpWhoami), reused).expect(t, api.KindReplay)
}

// TestReplayCacheDisabledStillRefuses: without the cache the KV claim alone
// refuses replays (the cache is an optimisation, never the authority).
func TestReplayCacheDisabledStillRefuses(t *testing.T) {
	e := newEnv(t, service.Config{ReplayCache: -1})
	alice := e.register(t, "alice")
	read := sign(t, alice.Sign, e.subject(subjects.OpWhoami), api.Empty{}, signOpts{})
	request(t, e.nc, e.subject(subjects.OpWhoami), read).expect(t, api.KindOther)
	request(t, e.nc, e.subject(subjects.OpWhoami), read).expect(t, api.KindReplay)
}

// TestRateLimitPerSigner: past its burst a signer gets 429 with a retry
// hint, and another signer is not affected. The rate is so low that no
// token comes back during the test, whatever the machine's speed.
func TestRateLimitPerSigner(t *testing.T) {
	e := newEnv(t, service.Config{RateLimit: 0.0001, RateBurst: 3})
	// The admin registered both with 2 requests of its own burst.
	alice := e.register(t, "alice")
	bob := e.register(t, "bob")
	for range 3 {
		request(t, e.nc, e.subject(subjects.OpWhoami), sign(t, alice.Sign, e.subject(subjects.OpWhoami), api.Empty{}, signOpts{})).expect(t, api.KindOther)
	}
	nonceKeys := nonceCount(t, e.st)
	for range 5 {
		r := request(t, e.nc, e.subject(subjects.OpWhoami), sign(t, alice.Sign, e.subject(subjects.OpWhoami), api.Empty{}, signOpts{}))
		r.expect(t, api.KindRateLimited)
		ms, err := strconv.ParseInt(r.header.Get(subjects.HeaderRetryAfter), 10, 64)
		if err != nil || ms <= 0 {
			t.Fatalf("retry hint %q", r.header.Get(subjects.HeaderRetryAfter))
		}
	}
	if n := nonceCount(t, e.st); n != nonceKeys {
		t.Fatalf("rate-limited requests claimed %d nonces", n-nonceKeys)
	}
	for range 3 {
		request(t, e.nc, e.subject(subjects.OpWhoami), sign(t, bob.Sign, e.subject(subjects.OpWhoami), api.Empty{}, signOpts{})).expect(t, api.KindOther)
	}
	if got := rejections(t, e.svc, subjects.OpWhoami)["rate_limited"]; got != 5 {
		t.Fatalf("stats count %d rate_limited, want 5", got)
	}
	// The client library surfaces it as ErrRateLimited.
	c := client.New(e.nc, alice, client.WithRetries(0))
	if _, err := c.Whoami(natstest.Ctx(t, 2)); !errors.Is(err, client.ErrRateLimited) {
		t.Fatalf("client: %v, want ErrRateLimited", err)
	}
}

// TestAuditEntriesCommitWithMutations: every accepted mutation adds exactly
// one entry to its chain, a refused one none, and the chain verifies.
func TestAuditEntriesCommitWithMutations(t *testing.T) {
	e := newEnv(t, service.Config{})
	alice := e.register(t, "alice")
	e.register(t, "bob")
	ac := client.New(e.nc, alice)
	if _, _, err := ac.CreateRoom(natstest.Ctx(t, 2), "r1", "chat.r1", []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ac.RemoveMember(natstest.Ctx(t, 2), "r1", "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := ac.RemoveMember(natstest.Ctx(t, 2), "r1", "bob"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("second remove: %v", err)
	}
	entries, err := ac.Audit(natstest.Ctx(t, 2), "r1")
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || entries[0].Op != string(subjects.OpRoomCreate) || entries[1].Op != string(subjects.OpRoomRemove) ||
		entries[1].Target != "bob" || entries[1].Actor != "alice" || entries[1].Epoch != 1 {
		t.Fatalf("entries: %+v", entries)
	}
	if err := client.VerifyAudit(e.svc.PublicKey(), "r1", entries); err != nil {
		t.Fatal(err)
	}
	if n := keyCount(t, e.st, "audit.identities."); n != 2 {
		t.Fatalf("identity chain has %d entries, want 2 (alice, bob)", n)
	}
	var head struct {
		Seq uint64 `msgpack:"seq"`
	}
	ent, err := e.st.Room("r1").Get(natstest.Ctx(t, 2), "audithead.room.r1")
	if err != nil || msgpack.Unmarshal(ent.Value, &head) != nil || head.Seq != 2 {
		t.Fatalf("head %+v %v", head, err)
	}
}
