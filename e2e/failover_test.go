//go:build long

// A rolling restart and a leader kill on a cluster of processes take a
// minute: they run with the long tests (README, "Long tests").

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/membership/client"
	"github.com/unibus/membership/internal/natstest"
)

// TestFailoverGap compares, in one run on one 3-node cluster of membershipd
// processes, the longest time with no acknowledged write for raw JetStream
// KV writes and for the service's mutations (through the client library):
// during a rolling restart (SIGTERM node by node — each process is a
// nats-server node and a replica — then replica by replica, two replicas
// that are not nodes) and after a SIGKILL of the node that
// leads both streams. Planned restarts must cost the service well under a
// second; a kill may cost it no more than Raft's election costs JetStream,
// with a generous margin (docs/performance.md, "Failover").
func TestFailoverGap(t *testing.T) {
	start := time.Now()
	c := newCluster(t, 3)
	nc := c.connect(t, 0)
	rawBucket(t, nc)
	replicas := extraReplicas(t, c, 2)
	t.Logf("cluster ready in %s", time.Since(start).Round(time.Millisecond))

	ctx, cancel := context.WithTimeout(context.Background(), 3*faultProgressCap)
	defer cancel()
	admin := client.New(c.connect(t, 1), c.admin, client.WithRetries(10), client.WithBackoff(200*time.Millisecond), client.WithTimeout(attemptTimeout))
	// Each writer creates rooms of its own: the writers never contend for
	// one state (identity.register would: the registry's audit chain).
	names := make([]string, failoverWriters)
	for i := range names {
		names[i] = fmt.Sprintf("writer%d", i)
	}
	writers := registerNew(ctx, t, admin, names...)
	svcAcks, rawAcks := &ackLog{}, &ackLog{}
	var wg sync.WaitGroup
	for i := range failoverWriters {
		wg.Add(2)
		w := client.New(c.connect(t, i%3), writers[names[i]], client.WithRetries(50), client.WithBackoff(50*time.Millisecond), client.WithTimeout(failoverAttempt))
		go func() { defer wg.Done(); svcAcks.run(ctx, func() error { return createOne(ctx, w) }) }()
		kv := rawBucket(t, c.connect(t, i%3))
		go func() {
			defer wg.Done()
			rawAcks.run(ctx, func() error {
				actx, acancel := context.WithTimeout(ctx, failoverAttempt)
				defer acancel()
				_, err := kv.Put(actx, fmt.Sprintf("w%d", i), []byte("x"))
				return err
			})
		}()
	}
	settle := func() { svcAcks.waitMore(t, 20); rawAcks.waitMore(t, 20) }
	settle()

	from := time.Now()
	for _, n := range c.nodes {
		n.signal(t, syscall.SIGTERM)
		n.wait(t)
		if code := n.exitCode(); code != 0 {
			t.Errorf("%s exited %d after SIGTERM", n.name, code)
		}
		n.start(t)
		c.waitCurrent(t, nc)
		settle()
	}
	mid := time.Now()
	for _, r := range replicas {
		r.signal(t, syscall.SIGTERM)
		r.wait(t)
		if code := r.exitCode(); code != 0 {
			t.Errorf("%s exited %d after SIGTERM", r.name, code)
		}
		r.start(t)
		settle()
	}
	to := time.Now()
	rollSvc, rollRaw := svcAcks.maxGap(from, to), rawAcks.maxGap(from, to)
	replSvc := svcAcks.maxGap(mid, to)

	leader := c.streamLeader(t, nc)
	leadBoth(t, nc, leader.name)
	settle()
	from = time.Now()
	leader.kill(t)
	settle()
	to = time.Now()
	leader.start(t)
	c.waitCurrent(t, nc)
	killSvc, killRaw := svcAcks.maxGap(from, to), rawAcks.maxGap(from, to)
	cancel()
	wg.Wait()

	t.Logf("rolling restart (SIGTERM node by node, then replica by replica): longest gap raw KV %s, service %s (replicas alone: %s)",
		rollRaw.Round(time.Millisecond), rollSvc.Round(time.Millisecond), replSvc.Round(time.Millisecond))
	t.Logf("SIGKILL of the streams' leader %s: longest gap raw KV %s, service %s", leader.name, killRaw.Round(time.Millisecond), killSvc.Round(time.Millisecond))
	t.Logf("writes acknowledged: raw KV %d (%d attempts failed), service %d", len(rawAcks.at), len(rawAcks.errs), len(svcAcks.at))
	if len(svcAcks.errs) > 0 {
		t.Errorf("%d mutations failed after the client's retries: %v", len(svcAcks.errs), svcAcks.errs)
	}
	if bound := max(time.Second, rollRaw+500*time.Millisecond); rollSvc > bound {
		t.Errorf("rolling restart: the service went %s without an acknowledged mutation, bound %s", rollSvc, bound)
	}
	// A request the killed replica had taken dies with it: only its
	// client's timeout tells, so a kill may cost that timeout on top.
	if bound := killRaw + failoverAttempt + time.Second; killSvc > bound {
		t.Errorf("leader kill: the service went %s without an acknowledged mutation, bound %s (raw KV %s)", killSvc, bound, killRaw)
	}
}

// TestFailoverGap's load: writers of each kind, and one attempt's timeout
// (the client library's default) for both kinds.
const (
	failoverWriters = 3
	failoverAttempt = 5 * time.Second
)

// ackLog records when writes were acknowledged.
type ackLog struct {
	mu   sync.Mutex
	at   []time.Time
	errs []string // writes that failed (a raw write is tried again, a mutation after the client's retries)
}

// run repeats write until ctx ends, logging each acknowledgement.
func (a *ackLog) run(ctx context.Context, write func() error) {
	for ctx.Err() == nil {
		err := write()
		a.mu.Lock()
		if err == nil {
			a.at = append(a.at, time.Now())
		} else if ctx.Err() == nil {
			a.errs = append(a.errs, err.Error())
		}
		a.mu.Unlock()
	}
}

// waitMore waits for n more acknowledgements.
func (a *ackLog) waitMore(t *testing.T, n int) {
	t.Helper()
	a.mu.Lock()
	target := len(a.at) + n
	a.mu.Unlock()
	deadline := time.Now().Add(faultProgressCap)
	for time.Now().Before(deadline) {
		a.mu.Lock()
		got := len(a.at)
		a.mu.Unlock()
		if got >= target {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("writes made no progress")
}

// maxGap is the longest time within [from, to] with no acknowledgement.
func (a *ackLog) maxGap(from, to time.Time) time.Duration {
	a.mu.Lock()
	at := slices.Clone(a.at)
	a.mu.Unlock()
	slices.SortFunc(at, func(x, y time.Time) int { return x.Compare(y) })
	last, gap := from, time.Duration(0)
	for _, ts := range at {
		if ts.Before(from) {
			continue
		}
		if ts.After(to) {
			ts = to
		}
		gap = max(gap, ts.Sub(last))
		last = ts
		if ts.Equal(to) {
			break
		}
	}
	return max(gap, to.Sub(last))
}

// extraReplicas starts n replicas that are not nodes, connected to the
// whole cluster as docs/deploy.md starts them.
func extraReplicas(t *testing.T, c *testCluster, n int) []*clusterNode {
	t.Helper()
	key := c.nodes[0].args[slices.Index(c.nodes[0].args, "--service-key")+1]
	out := make([]*clusterNode, n)
	for i := range out {
		name := fmt.Sprintf("r%d", i+1)
		out[i] = &clusterNode{name: name, root: t, logPath: filepath.Join(c.dir, name), args: []string{
			"--server", c.urls(), "--service-key", key, "--replicas", "3", "--bootstrap-admin", c.adminFile,
		}}
		out[i].start(t)
	}
	return out
}

// rawBucket opens (creating once) an R3 KV bucket for raw writes.
func rawBucket(t *testing.T, nc *nats.Conn) jetstream.KeyValue {
	t.Helper()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), nodeReadyTimeout)
	defer cancel()
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "raw", Replicas: 3, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// leadBoth moves the raw bucket's stream leader to the node that leads the
// service's bucket, so that one kill costs both the same election.
func leadBoth(t *testing.T, nc *nats.Conn, name string) {
	t.Helper()
	js, _ := jetstream.New(nc)
	req, _ := json.Marshal(map[string]any{"placement": map[string]any{"preferred": name}})
	deadline := time.Now().Add(faultProgressCap)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), natstest.Patience)
		st, err := js.Stream(ctx, "KV_raw")
		if err == nil && st.CachedInfo().Cluster != nil && st.CachedInfo().Cluster.Leader == name {
			cancel()
			return
		}
		_, _ = nc.RequestWithContext(ctx, "$JS.API.STREAM.LEADER.STEPDOWN.KV_raw", req)
		cancel()
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("KV_raw leader not moved to %s", name)
}

// createOne creates a room of the writer's own: one mutation.
func createOne(ctx context.Context, w *client.Client) error {
	room := fmt.Sprintf("%s-%d", w.Identity().Endpoint, created.Add(1))
	_, _, err := w.CreateRoom(ctx, room, "chat."+room, nil)
	return err
}

// created numbers createOne's rooms.
var created atomic.Int64
