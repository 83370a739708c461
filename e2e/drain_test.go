//go:build long

// A cluster-process test: it runs with the long tests (README, "Long tests").

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/unibus/membership/client"

	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/internal/natstest"
)

// TestRollingRestart restarts each of three service replicas in turn with
// SIGTERM while clients keep a bounded load of mutations and reads going:
// a draining replica finishes what it took and leaves the queue group, so
// no request fails. A failed request is one that ended in a non-retryable
// error or ran out of retries.
func TestRollingRestart(t *testing.T) {
	start := time.Now()
	d := startDeployment(t)
	dir := t.TempDir()
	adminFile := filepath.Join(dir, "admin.id")
	adminID, _ := identity.New("admin")
	if err := identity.Write(adminFile, adminID); err != nil {
		t.Fatal(err)
	}
	replicas := make([]*clusterNode, 3)
	for i := range replicas {
		replicas[i] = d.replica(t, adminFile, filepath.Join(dir, fmt.Sprintf("r%d", i+1)))
	}
	t.Logf("deployment and 3 replicas ready in %s", time.Since(start).Round(time.Millisecond))

	ctx := natstest.Ctx(t, 30)
	nc, _ := d.clientConn(t)
	opts := []client.Option{client.WithRetries(10), client.WithBackoff(100 * time.Millisecond), client.WithTimeout(5 * time.Second)}
	admin := client.New(nc, adminID, opts...)
	ownerID, _ := identity.New("owner")
	pub, _ := ownerID.Public()
	if _, err := admin.Register(ctx, pub, false); err != nil {
		t.Fatal(err)
	}
	owner := client.New(nc, ownerID, opts...)
	if _, _, err := owner.CreateRoom(ctx, "rolling", "chat.rolling", nil); err != nil {
		t.Fatal(err)
	}

	var (
		ops, failed, acked atomic.Int64
		mu                 sync.Mutex
		failures           []string
		added              []string
	)
	record := func(what string, err error) bool {
		ops.Add(1)
		if err != nil {
			failed.Add(1)
			mu.Lock()
			failures = append(failures, fmt.Sprintf("%s: %v", what, err))
			mu.Unlock()
			return false
		}
		acked.Add(1)
		return true
	}
	stop := make(chan struct{})
	const maxOps = 400 // per worker
	var wg sync.WaitGroup
	var seq atomic.Int64
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < maxOps; n++ {
				select {
				case <-stop:
					return
				default:
				}
				if w == 0 { // mutations: register, then add to the room
					id, _ := identity.New(fmt.Sprintf("u%d", seq.Add(1)))
					p, _ := id.Public()
					if !record("register", func() error { _, err := admin.Register(ctx, p, false); return err }()) {
						continue
					}
					if record("add", func() error { _, err := owner.AddMember(ctx, "rolling", id.Endpoint); return err }()) {
						mu.Lock()
						added = append(added, id.Endpoint)
						mu.Unlock()
					}
				} else { // reads
					record("room", func() error { _, err := owner.Room(ctx, "rolling"); return err }())
				}
			}
		}()
	}
	waitOps := func(n int64) {
		target := acked.Load() + n
		deadline := time.Now().Add(faultProgressCap)
		for acked.Load() < target && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if acked.Load() < target {
			t.Fatalf("load made no progress")
		}
	}
	for _, r := range replicas {
		waitOps(10)
		r.signal(t, syscall.SIGTERM)
		r.wait(t)
		if code := r.exitCode(); code != 0 {
			t.Errorf("%s exited %d after SIGTERM", r.name, code)
		}
		logs, _ := os.ReadFile(r.proc.logPath)
		if !strings.Contains(string(logs), "draining") {
			t.Errorf("%s logged no drain", r.name)
		}
		waitOps(10) // the others carry the load alone
		r.start(t)
	}
	waitOps(10)
	close(stop)
	wg.Wait()

	members, err := owner.AllMembers(ctx, "rolling")
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, m := range members {
		have[m.Endpoint] = true
	}
	lost := 0
	for _, e := range added {
		if !have[e] {
			lost++
		}
	}
	t.Logf("rolling restart of 3 replicas: requests=%d acknowledged=%d failed=%d lost=%d in %s",
		ops.Load(), acked.Load(), failed.Load(), lost, time.Since(start).Round(time.Millisecond))
	if failed.Load() != 0 {
		t.Errorf("%d requests failed: %v", failed.Load(), failures)
	}
	if lost != 0 {
		t.Errorf("%d acknowledged adds lost", lost)
	}
}
