package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/unibus/membership/api"
)

// opFunc performs one operation as client worker w, its n-th call.
type opFunc func(ctx context.Context, w, n int) error

// result is what one measured operation did.
type result struct {
	name     string
	clients  int
	ops      int
	errors   int
	svcErrs  int // errors the service answered (the rest: timeouts, transport)
	elapsed  time.Duration
	lat      []time.Duration // sorted, successful and failed calls alike
	firstErr error
}

func (r *result) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ops) / r.elapsed.Seconds()
}

func (r *result) pct(q float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	i := int(q * float64(len(r.lat)-1))
	return r.lat[i]
}

// plan says how long each operation runs: count calls in all, or for a
// duration when count is 0.
type plan struct {
	clients  int
	count    int
	duration time.Duration
	progress io.Writer // nil: no progress line
}

// run drives op with p.clients concurrent workers, each calling it in a
// loop, and measures every call.
func run(ctx context.Context, name string, p plan, op opFunc) *result {
	var (
		done    atomic.Int64
		errs    atomic.Int64
		svcErrs atomic.Int64
		next    atomic.Int64
		mu      sync.Mutex
		all     []time.Duration
		first   error
		wg      sync.WaitGroup
		stopped = make(chan struct{})
	)
	deadline := time.Time{}
	if p.count == 0 {
		deadline = time.Now().Add(p.duration)
	}
	start := time.Now()
	if p.progress != nil {
		go func() {
			t := time.NewTicker(250 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stopped:
					fmt.Fprintf(p.progress, "\r\033[K")
					return
				case <-t.C:
					n := done.Load()
					fmt.Fprintf(p.progress, "\r\033[K%-8s %8d ops %8.0f ops/s %d errors", name, n,
						float64(n)/time.Since(start).Seconds(), errs.Load())
				}
			}
		}()
	}
	for w := 0; w < p.clients; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			lat := make([]time.Duration, 0, 1024)
			var myErr error
			for i := 0; ; i++ {
				if p.count > 0 {
					if next.Add(1) > int64(p.count) {
						break
					}
				} else if time.Now().After(deadline) {
					break
				}
				if ctx.Err() != nil {
					break
				}
				t0 := time.Now()
				err := op(ctx, w, i)
				lat = append(lat, time.Since(t0))
				done.Add(1)
				if err != nil {
					errs.Add(1)
					if ae := (*api.Error)(nil); errors.As(err, &ae) {
						svcErrs.Add(1)
					}
					if myErr == nil {
						myErr = err
					}
				}
			}
			mu.Lock()
			all = append(all, lat...)
			if first == nil {
				first = myErr
			}
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stopped)
	if p.progress != nil {
		time.Sleep(10 * time.Millisecond) // let the progress line clear itself
	}
	slices.Sort(all)
	return &result{name: name, clients: p.clients, ops: int(done.Load()), errors: int(errs.Load()),
		svcErrs: int(svcErrs.Load()),
		elapsed: elapsed, lat: all, firstErr: first}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d.Microseconds())/1000) }

// printTable prints one row per operation.
func printTable(w io.Writer, rs []*result) {
	fmt.Fprintf(w, "%-8s %7s %8s %10s %9s %9s %9s %7s\n", "op", "clients", "ops", "ops/s", "p50_ms", "p99_ms", "p99.9_ms", "errors")
	for _, r := range rs {
		fmt.Fprintf(w, "%-8s %7d %8d %10.0f %9s %9s %9s %7d\n", r.name, r.clients, r.ops, r.rate(),
			ms(r.pct(0.50)), ms(r.pct(0.99)), ms(r.pct(0.999)), r.errors)
	}
	for _, r := range rs {
		if r.firstErr != nil {
			fmt.Fprintf(w, "# %s: first error: %v\n", r.name, r.firstErr)
		}
	}
}
