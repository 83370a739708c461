//go:build unix

package store_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/store"
)

// The benchmarks of a room read's store steps. They read the process's
// CPU time (getrusage), a steadier measure than the wall clock on a shared
// machine, hence unix only.

// BenchmarkRoomRead compares the two ways of reading a room's record and
// a membership on a single-replica shard, many at once as the service's
// workers do: two gets sent together (before GetLast) and one GetLast.
// go test -run '^$' -bench BenchmarkRoomRead -cpu 2 ./store/
func BenchmarkRoomRead(b *testing.B) {
	st := benchRooms(b)
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
			b.SetParallelism(8)              // 16 readers on 2 cores
			var before, after syscall.Rusage // the process's CPU time: server, store and readers alike
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
			defer func() {
				_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
				used := after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano()
				b.ReportMetric(float64(used)/1e3/float64(b.N), "cpu-µs/op")
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
	st := benchRooms(b)
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
func benchRooms(b *testing.B) *store.Store {
	nc := natstest.Connect(b, natstest.Server(b))
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
	return st
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
