package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/store"
)

// sameEntry reports how got differs from want, the entry [store.Shard.Get]
// read: value (nil or not), revision and time.
func sameEntry(got, want store.Entry) error {
	if !bytes.Equal(got.Value, want.Value) || (got.Value == nil) != (want.Value == nil) ||
		got.Rev != want.Rev || !got.Time.Equal(want.Time) {
		return fmt.Errorf("got %+v (nil value %v), Get reads %+v (nil value %v)", got, got.Value == nil, want, want.Value == nil)
	}
	return nil
}

// empty reports whether e is the entry of a key that never existed.
func empty(e store.Entry) bool { return e.Value == nil && e.Rev == 0 && e.Time.IsZero() }

// agree reads keys with GetLast and each with Get, and reports the first
// key whose entries differ.
func agree(ctx context.Context, sh *store.Shard, keys ...string) ([]store.Entry, error) {
	got, err := sh.GetLast(ctx, keys...)
	if err != nil {
		return nil, fmt.Errorf("GetLast: %w", err)
	}
	if len(got) != len(keys) {
		return nil, fmt.Errorf("GetLast: %d entries for %d keys", len(got), len(keys))
	}
	for i, k := range keys {
		want, err := sh.Get(ctx, k)
		if err != nil {
			return nil, fmt.Errorf("Get(%s): %w", k, err)
		}
		if err := sameEntry(got[i], want); err != nil {
			return nil, fmt.Errorf("key %s: %w", k, err)
		}
	}
	return got, nil
}

// TestGetLast: several keys read at once, in one direct get of a
// single-replica bucket, are exactly what Get reads of each — present,
// empty, never written, deleted, purged, expired (its marker, then
// nothing), a key named twice — and in the order asked.
func TestGetLast(t *testing.T) {
	st, js, _, _ := open(t) // MaxTTL 2 s: TTL markers expire too
	ctx := natstest.Ctx(t, 1)
	mustCommit(t, st, store.Write{Key: "room.r1", Value: []byte("room")}, store.Write{Key: "member.r1.e1", Value: []byte{}},
		store.Write{Key: "member.r1.del", Value: []byte("x")}, store.Write{Key: "member.r1.purged", Value: []byte("p")})
	old := mustGet(t, st, "room.r1")
	mustCommit(t, st, store.Write{Key: "room.r1", Value: []byte("room v2"), Rev: old.Rev})
	if err := st.Delete(ctx, "member.r1.del"); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(ctx, "member.r1.purged"); err != nil {
		t.Fatal(err)
	}
	keys := []string{"member.r1.e1", "room.r1", "member.r1.none", "member.r1.del", "member.r1.purged", "room.r1"}
	got, err := agree(ctx, st.Shard, keys...)
	if err != nil {
		t.Fatal(err)
	}
	if string(got[1].Value) != "room v2" || got[1].Rev <= old.Rev || got[2].Rev != 0 || got[3].Exists() || got[3].Rev == 0 ||
		got[4].Exists() || got[4].Rev == 0 || got[0].Value == nil || len(got[0].Value) != 0 {
		t.Fatalf("entries %+v", got)
	}

	t.Run("no key has a message", func(t *testing.T) {
		got, err := agree(ctx, st.Shard, "room.none", "member.none.e1")
		if err != nil {
			t.Fatal(err)
		}
		if !empty(got[0]) || !empty(got[1]) {
			t.Fatalf("entries %+v, want empty", got)
		}
	})

	t.Run("expired", func(t *testing.T) {
		mustCommit(t, st, store.Write{Key: "member.r1.ttl", Value: []byte("t"), TTL: time.Second})
		if got, err := agree(ctx, st.Shard, "room.r1", "member.r1.ttl"); err != nil || !got[1].Exists() {
			t.Fatalf("before expiry: %+v, %v", got, err)
		}
		// nats-server removes a message whose TTL ran out; whether a
		// marker stands in for it or not, both reads must agree.
		natstest.Eventually(t, 4, "the TTL'd key expires", func() error {
			got, err := agree(natstest.Ctx(t, 1), st.Shard, "room.r1", "member.r1.ttl")
			if err == nil && got[1].Exists() {
				err = fmt.Errorf("entry %+v", got[1])
			}
			return err
		})
	})

	t.Run("not a literal key", func(t *testing.T) {
		if _, err := st.GetLast(ctx, "room.r1", "member.r1.*"); err == nil {
			t.Fatal("GetLast with a wildcard key: no error")
		}
	})
}

// TestGetLastShareOneSubscription: concurrent multi-key reads on one
// connection each get their own keys' entries, through one reply
// subscription of the connection (internal/replymux), none left behind.
func TestGetLastShareOneSubscription(t *testing.T) {
	st, _, _, nc := open(t)
	ctx := natstest.Ctx(t, 2)
	const n = 40
	var writes []store.Write
	for i := range n {
		writes = append(writes, store.Write{Key: "room.r" + strconv.Itoa(i), Value: []byte("room " + strconv.Itoa(i))},
			store.Write{Key: "member.r" + strconv.Itoa(i) + ".e", Value: []byte("member " + strconv.Itoa(i))})
	}
	mustCommit(t, st, writes...)
	before := nc.NumSubscriptions()
	var wg sync.WaitGroup
	for round := range 3 {
		for i := range n {
			wg.Go(func() {
				r := strconv.Itoa(i)
				got, err := st.GetLast(ctx, "member.r"+r+".e", "room.r"+r, "member.r"+r+".none")
				if err != nil {
					t.Errorf("round %d, room %d: %v", round, i, err)
					return
				}
				if string(got[0].Value) != "member "+r || string(got[1].Value) != "room "+r || !empty(got[2]) {
					t.Errorf("round %d, room %d: entries %+v", round, i, got)
				}
			})
		}
		wg.Wait()
	}
	if after := nc.NumSubscriptions(); after > before+1 {
		t.Fatalf("%d subscriptions after %d multi-key reads, %d before: want at most one more", after, 3*n, before)
	}
}

// TestGetLastContextEnds: a multi-key read whose context ends while its
// answer is held back returns the context's error at once, and the
// connection's reply subscription goes on serving later reads (the late
// answer is dropped, not handed to another call).
func TestGetLastContextEnds(t *testing.T) {
	s := natstest.Server(t)
	p := natstest.NewProxy(t, s)
	nc, err := nats.Connect(p.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js := natstest.JetStream(t, nc)
	st, err := store.Open(natstest.Ctx(t, 1), js, testConfig())
	if err != nil {
		t.Fatal(err)
	}
	mustCommit(t, st, store.Write{Key: "room.a", Value: []byte("a")}, store.Write{Key: "room.b", Value: []byte("b")})
	if _, err := st.GetLast(natstest.Ctx(t, 1), "room.a", "room.b"); err != nil { // the reply subscription exists
		t.Fatal(err)
	}

	p.Hold()
	ctx, cancel := context.WithCancel(natstest.Ctx(t, 1))
	done := make(chan error, 1)
	go func() {
		_, err := st.GetLast(ctx, "room.a", "room.b")
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("GetLast after its context ended: %v, want context.Canceled", err)
		}
	case <-natstest.Ctx(t, 1).Done():
		t.Fatal("GetLast did not end with its context")
	}
	p.Release()
	got, err := st.GetLast(natstest.Ctx(t, 1), "room.b", "room.a")
	if err != nil || string(got[0].Value) != "b" || string(got[1].Value) != "a" {
		t.Fatalf("after the ended call: %+v, %v", got, err)
	}
}

// TestGetLastReplicated: on a bucket replicated over a three-node cluster
// (no direct gets: reads go to the stream leader, directGets) GetLast
// falls back to a leader get per key and reads the same entries. The
// JetStream API refuses a multi_last request, so the entries coming back
// at all show that the fallback ran.
func TestGetLastReplicated(t *testing.T) {
	nodes := natstest.Cluster(t, 3)
	nc := natstest.Connect(t, nodes[1])
	js := natstest.JetStream(t, nc)
	cfg := testConfig()
	cfg.Replicas = 3
	st, err := store.Open(natstest.Ctx(t, 2), js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := natstest.Ctx(t, 2)
	stream, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		t.Fatal(err)
	}
	if c := stream.CachedInfo().Config; c.Replicas != 3 || c.AllowDirect {
		t.Fatalf("stream replicas %d, direct %v: want 3, false", c.Replicas, c.AllowDirect)
	}
	mustCommit(t, st, store.Write{Key: "room.r", Value: []byte("r")}, store.Write{Key: "member.r.gone", Value: []byte("g")})
	if err := st.Delete(ctx, "member.r.gone"); err != nil {
		t.Fatal(err)
	}
	got, err := agree(ctx, st.Shard, "room.r", "member.r.none", "member.r.gone")
	if err != nil {
		t.Fatal(err)
	}
	if string(got[0].Value) != "r" || !empty(got[1]) || got[2].Exists() || got[2].Rev == 0 {
		t.Fatalf("entries %+v", got)
	}
}

// TestGetLastStoreGone: with the shard's stream gone nobody answers the
// direct get; GetLast fails (the caller fails closed) instead of taking
// the silence for absent keys.
func TestGetLastStoreGone(t *testing.T) {
	st, js, _, _ := open(t)
	ctx := natstest.Ctx(t, 1)
	mustCommit(t, st, store.Write{Key: "room.a", Value: []byte("a")})
	if err := js.DeleteStream(ctx, "KV_"+bucket); err != nil {
		t.Fatal(err)
	}
	if got, err := st.GetLast(ctx, "room.a", "member.a.e"); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("GetLast on a deleted stream: %+v, %v; want nats.ErrNoResponders", got, err)
	}
}
