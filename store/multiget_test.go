package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
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

// BenchmarkRoomRead compares the two ways of reading a room's record and
// a membership on a single-replica shard, many at once as the service's
// workers do: two gets sent together (before GetLast) and one GetLast.
// go test -run '^$' -bench BenchmarkRoomRead -cpu 2 ./store/
func BenchmarkRoomRead(b *testing.B) {
	st, _ := benchRooms(b)
	ctx := context.Background()
	read := map[string]func(r string) error{
		"two-gets": func(r string) error { return twoGets(ctx, st, r) },
		"getlast": func(r string) error {
			_, err := st.GetLast(ctx, "room.r"+r, "member.r"+r+".e")
			return err
		},
	}
	for _, name := range []string{"two-gets", "getlast"} {
		b.Run(name, func(b *testing.B) {
			b.SetParallelism(8) // 16 readers on 2 cores
			cpu := cpuTime()
			defer func() {
				if cpu > 0 { // 0: not measurable here (cpu_other_test.go)
					b.ReportMetric(float64((cpuTime()-cpu).Microseconds())/float64(b.N), "cpu-µs/op")
				}
			}()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					if err := read[name](strconv.Itoa(i % 64)); err != nil {
						b.Error(err)
						return
					}
					i++
				}
			})
		})
	}
}

// BenchmarkReadCriticalPath times, with 16 callers at once as
// memberbench's clients, the three store steps of a room read one after
// another, each alone: the read-nonce claim (a publish, then a shared
// marker check: readclaims.go), the two record gets sent together, and
// GetLast. A read waits for the slowest of the claim and its gets, so the
// claim's median against the gets' says which one a merged get can
// shorten. Reported as medians in µs.
// go test -run '^$' -bench BenchmarkReadCriticalPath -cpu 2 ./store/
func BenchmarkReadCriticalPath(b *testing.B) {
	st, _ := benchRooms(b)
	ctx := context.Background()
	var n atomic.Int64
	steps := []struct {
		name string
		run  func(r string) error
	}{
		{"claim", func(string) error {
			_, err := st.ClaimRead(ctx, "nonce.bench."+strconv.FormatInt(n.Add(1), 10)+"."+b.Name())
			return err
		}},
		{"two-gets", func(r string) error { return twoGets(ctx, st, r) }},
		{"getlast", func(r string) error { _, err := st.GetLast(ctx, "room.r"+r, "member.r"+r+".e"); return err }},
	}
	for _, step := range steps {
		var mu sync.Mutex
		var took []time.Duration
		b.Run(step.name, func(b *testing.B) {
			b.SetParallelism(8) // 16 callers on 2 cores
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					t0 := time.Now()
					if err := step.run(strconv.Itoa(i % 64)); err != nil {
						b.Error(err)
						return
					}
					d := time.Since(t0)
					mu.Lock()
					took = append(took, d)
					mu.Unlock()
					i++
				}
			})
			slices.Sort(took)
			if len(took) > 0 {
				b.ReportMetric(float64(took[len(took)/2].Microseconds()), "p50-µs")
			}
			took = took[:0]
		})
	}
}

// benchRooms opens a store on a new server with 64 rooms' records and one
// membership each (room.r<i>, member.r<i>.e).
func benchRooms(b *testing.B) (*store.Store, *nats.Conn) {
	s := natstest.Server(b)
	nc := natstest.Connect(b, s)
	st, err := store.Open(natstest.Ctx(b, 1), natstest.JetStream(b, nc), testConfig())
	if err != nil {
		b.Fatal(err)
	}
	var writes []store.Write
	for i := range 64 {
		r := strconv.Itoa(i)
		writes = append(writes, store.Write{Key: "room.r" + r, Value: bytes.Repeat([]byte("r"), 200)},
			store.Write{Key: "member.r" + r + ".e", Value: bytes.Repeat([]byte("m"), 80)})
	}
	if err := st.Commit(natstest.Ctx(b, 1), writes); err != nil {
		b.Fatal(err)
	}
	return st, nc
}

// twoGets reads room r's record and membership with a get each, at once,
// as the read path did before GetLast.
func twoGets(ctx context.Context, st *store.Store, r string) error {
	var wg sync.WaitGroup
	var e1, e2 error
	wg.Go(func() { _, e1 = st.Get(ctx, "room.r"+r) })
	_, e2 = st.Get(ctx, "member.r"+r+".e")
	wg.Wait()
	return errors.Join(e1, e2)
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
