package e2e

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/subjects"
)

// TestAuditTrail: every accepted room mutation, across two replicas and
// concurrent owners' requests, appends one signed entry linked to the one
// before; members read the trail and verify it against the pinned service
// key; non-members and removed members cannot read it; and rewriting,
// removing or re-ordering a stored entry directly in the KV bucket is
// detected.
func TestAuditTrail(t *testing.T) {
	spub := membertest.ServicePub()
	s := natstest.Server(t)
	membertest.Service(t, s, service.Config{}) // two replicas, one service key
	membertest.Service(t, s, service.Config{})
	admin := membertest.Admin(t, s)
	pin := client.WithServiceKey(spub)
	member := func(name string) *client.Client {
		c := membertest.Member(t, s, admin, name)
		return client.New(natstest.Connect(t, s), c.Identity(), pin)
	}
	alice, bob, eve := member("alice"), member("bob"), member("eve")
	var extra []string
	var m0 *client.Client
	for i := range 6 {
		extra = append(extra, fmt.Sprintf("m%d", i))
		if c := member(extra[i]); i == 0 {
			m0 = c
		}
	}
	ctx := natstest.Ctx(t, 6)

	if _, _, err := alice.CreateRoom(ctx, "r1", "chat.r1", []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	// Concurrent adds race for the same room record and chain head: the
	// losers re-plan, so every add lands exactly once in the chain.
	var wg sync.WaitGroup
	errs := make(chan error, len(extra))
	for _, m := range extra {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				_, err := alice.AddMember(ctx, "r1", m)
				if errors.Is(err, client.ErrConflict) {
					continue // lost the race more often than the service retries
				}
				errs <- err
				return
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent add: %v", err)
		}
	}
	if _, err := alice.RemoveMember(ctx, "r1", "m0"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := alice.Rekey(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Leave(ctx, "r1"); err != nil {
		t.Fatal(err)
	}

	entries, err := alice.Audit(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	if err := client.VerifyAudit(spub, "r1", entries); err != nil {
		t.Fatalf("genuine trail: %v", err)
	}
	want := 1 + len(extra) + 3 // create, adds, remove, rekey, leave
	if len(entries) != want {
		t.Fatalf("%d entries, want %d", len(entries), want)
	}
	added := map[string]bool{}
	for _, e := range entries[1 : 1+len(extra)] {
		if e.Op != string(subjects.OpRoomAdd) || e.Actor != "alice" {
			t.Fatalf("entry %+v, want an add by alice", e)
		}
		added[e.Target] = true
	}
	if len(added) != len(extra) {
		t.Fatalf("adds name %v, want each of %v once", added, extra)
	}
	last := entries[len(entries)-1]
	if last.Op != string(subjects.OpRoomLeave) || last.Actor != "bob" || last.Epoch != 2 {
		t.Fatalf("last entry %+v, want bob's leave at epoch 2", last)
	}
	// Pages chain up to the same trail.
	p1, err := alice.AuditPage(ctx, "r1", 0, 3)
	if err != nil || len(p1.Entries) != 3 || p1.Next != 3 {
		t.Fatalf("first page %+v %v", p1, err)
	}

	t.Run("members only", func(t *testing.T) {
		for name, c := range map[string]*client.Client{"non-member": eve, "removed member": m0, "left member": bob} {
			if _, err := c.AuditPage(ctx, "r1", 0, 0); !errors.Is(err, client.ErrForbidden) {
				t.Fatalf("%s reads the audit: %v, want ErrForbidden", name, err)
			}
		}
	})

	kv := membertest.RoomKV(t, natstest.Connect(t, s), "r1")
	key := func(seq uint64) string { return fmt.Sprintf("audit.room.r1.%012d", seq) }
	tamper := []struct {
		name   string
		change func(t *testing.T) (undo func())
	}{
		{"actor rewritten", func(t *testing.T) func() {
			return rewrite(t, kv, key(3), func(e *api.AuditEntry) { e.Actor = "eve" })
		}},
		{"target rewritten", func(t *testing.T) func() {
			return rewrite(t, kv, key(2), func(e *api.AuditEntry) { e.Target = "eve" })
		}},
		{"time rewritten", func(t *testing.T) func() {
			return rewrite(t, kv, key(1), func(e *api.AuditEntry) { e.Time -= 1000 })
		}},
		{"signature from another entry", func(t *testing.T) func() {
			return rewrite(t, kv, key(4), func(e *api.AuditEntry) { e.Sig = entries[2].Sig }) // entry 3's
		}},
		{"re-linked after a rewrite", func(t *testing.T) func() {
			// The forger fixes the next entry's link too: it still
			// cannot sign the rewritten entry.
			var h [32]byte
			undo1 := rewrite(t, kv, key(5), func(e *api.AuditEntry) { e.Epoch = 9; h = e.Hash() })
			undo2 := rewrite(t, kv, key(6), func(e *api.AuditEntry) { e.Prev = h[:] })
			return func() { undo2(); undo1() }
		}},
		{"entry removed", func(t *testing.T) func() {
			old, err := kv.Get(ctx, key(4))
			if err != nil {
				t.Fatal(err)
			}
			if err := kv.Delete(ctx, key(4)); err != nil {
				t.Fatal(err)
			}
			return func() {
				if _, err := kv.Put(ctx, key(4), old.Value()); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"entries swapped", func(t *testing.T) func() {
			a, err := kv.Get(ctx, key(2))
			if err != nil {
				t.Fatal(err)
			}
			b, err := kv.Get(ctx, key(3))
			if err != nil {
				t.Fatal(err)
			}
			put := func(k string, v []byte) {
				if _, err := kv.Put(ctx, k, v); err != nil {
					t.Fatal(err)
				}
			}
			put(key(2), b.Value())
			put(key(3), a.Value())
			return func() { put(key(2), a.Value()); put(key(3), b.Value()) }
		}},
	}
	for _, tc := range tamper {
		t.Run(tc.name, func(t *testing.T) {
			undo := tc.change(t)
			got, err := alice.Audit(ctx, "r1")
			if err != nil {
				t.Fatal(err)
			}
			if err := client.VerifyAudit(spub, "r1", got); !errors.Is(err, client.ErrAuditChain) {
				t.Fatalf("tampered trail verifies: %v", err)
			}
			undo()
			got, err = alice.Audit(ctx, "r1")
			if err != nil {
				t.Fatal(err)
			}
			if err := client.VerifyAudit(spub, "r1", got); err != nil {
				t.Fatalf("restored trail: %v", err)
			}
		})
	}
	t.Run("another service key", func(t *testing.T) {
		other, _ := nkeys.CreateServer()
		opub, _ := other.PublicKey()
		if err := client.VerifyAudit(opub, "r1", entries); !errors.Is(err, client.ErrAuditChain) {
			t.Fatalf("trail verifies under another key: %v", err)
		}
	})
}

// rewrite replaces a stored audit entry by a modified copy, directly in the
// KV bucket (what someone with write access to the bucket could do), and
// returns a function that puts the original back.
func rewrite(t *testing.T, kv jetstream.KeyValue, key string, change func(*api.AuditEntry)) func() {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), natstest.Patience)
	defer cancel()
	old, err := kv.Get(ctx, key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	var e api.AuditEntry
	if err := msgpack.Unmarshal(old.Value(), &e); err != nil {
		t.Fatal(err)
	}
	change(&e)
	b, err := msgpack.Marshal(&e)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, key, b); err != nil {
		t.Fatal(err)
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), natstest.Patience)
		defer cancel()
		if _, err := kv.Put(ctx, key, old.Value()); err != nil {
			t.Fatal(err)
		}
	}
}
