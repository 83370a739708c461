//go:build long

// The fault scenarios take minutes: they run with the long tests
// (README, "Long tests"), not with the README's test command.

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/subjects"
)

// Bounds of the scenarios. The fault load has none of its own: it runs as
// long as its fault (faultload_test.go). The race test's time limit only
// stops a race that cannot finish and never decides pass or fail on its
// own.
const (
	faultSkew     = 2 * time.Minute  // request window: outlives any restart here
	raceOps       = 1000             // race test: operations in total
	raceTimeLimit = 75 * time.Second // race test: bound by time as well
)

// TestClusterFaults runs every fault against one cluster, in an order that
// keeps it usable: the faults that leave the cluster whole come first.
func TestClusterFaults(t *testing.T) { clusterFaults(t) }

// TestClusterFaultsShards runs the same faults against a cluster whose
// state is in four room shards: the node killed, paused or cut off is the
// leader of the shard of room f1 (the shards whose leaders it also held
// fail over with it). Nothing acknowledged may be lost or applied twice, in
// any room of any shard, and every shard's replicas become current again
// after each fault.
func TestClusterFaultsShards(t *testing.T) { clusterFaults(t, "--shards", "4") }

// clusterFaults runs the fault scenarios on a 3-node cluster started with
// the extra membershipd flags.
func clusterFaults(t *testing.T, extra ...string) {
	start := time.Now()
	c := newCluster(t, 3, append([]string{"--skew", faultSkew.String()}, extra...)...)
	t.Logf("cluster ready in %s", time.Since(start))
	w := setupWorld(t, c)
	watch := c.connect(t, 0)
	for _, tc := range []struct {
		name string
		run  func(t *testing.T)
	}{
		{"LoadLastsAsLongAsItsFault", func(t *testing.T) {
			// More acknowledgements than the load's old count bound
			// allowed (900): with that bound this failed every time.
			tl := w.load(t, func(tl *tally) { waitAcks(t, tl, 905) })
			w.verify(t, "long-fault", tl)
		}},
		{"KillStreamLeaderTwice", func(t *testing.T) {
			w.underLoad(t, "kill-leader-x2", watch, func(tl *tally) {
				killLeader := func() {
					leader := c.streamLeader(t, watch)
					t.Logf("SIGKILL stream leader %s", leader.name)
					leader.kill(t)
					waitAcks(t, tl, 5)
					leader.start(t)
				}
				killLeader()
				c.waitCurrent(t, watch)
				waitAcks(t, tl, 5)
				killLeader()
			})
		}},
		{"PauseStreamLeader", func(t *testing.T) {
			w.underLoad(t, "pause-leader", watch, func(tl *tally) {
				leader := c.streamLeader(t, watch)
				other := c.connect(t, (slices.Index(c.nodes, leader)+1)%len(c.nodes))
				t.Logf("SIGSTOP stream leader %s", leader.name)
				paused := time.Now()
				leader.signal(t, syscall.SIGSTOP)
				// Stay paused past the election timeout (at most 9s) and
				// until the others have elected a new leader.
				time.Sleep(10 * time.Second)
				for c.streamLeader(t, other) == leader {
					time.Sleep(200 * time.Millisecond)
				}
				t.Logf("new leader elected; SIGCONT %s after %s", leader.name, time.Since(paused).Round(time.Millisecond))
				leader.signal(t, syscall.SIGCONT)
			})
		}},
		{"KillReplica", func(t *testing.T) {
			w.underLoad(t, "kill-replica", watch, func(tl *tally) {
				leader := c.streamLeader(t, watch)
				victim := c.nodes[(slices.Index(c.nodes, leader)+1)%len(c.nodes)]
				t.Logf("SIGKILL replica %s (not the stream leader)", victim.name)
				victim.kill(t)
				waitAcks(t, tl, 10)
				victim.start(t)
			})
		}},
		{"SameRequestToAllReplicas", func(t *testing.T) { w.sameRequest(t) }},
		{"SameReadToAllReplicas", func(t *testing.T) { w.sameRead(t) }},
		{"RacingReplicas", func(t *testing.T) { w.race(t) }},
		{"MinorityPartition", func(t *testing.T) { w.partition(t) }},
		{"RestartWholeCluster", func(t *testing.T) { w.restartAll(t) }},
	} {
		ts := time.Now()
		ok := t.Run(tc.name, tc.run)
		t.Logf("%s took %s", tc.name, time.Since(ts).Round(time.Millisecond))
		if !ok {
			// Later faults need a healthy cluster: check it is one.
			c.waitCurrent(t, watch)
		}
	}
	t.Logf("all faults took %s", time.Since(start).Round(time.Millisecond))
}

// sameRequest sends one captured signed room.add 100 times concurrently,
// spread over all three replicas: exactly one is accepted.
func (w *faultWorld) sameRequest(t *testing.T) {
	tl := newTally()
	room := w.rooms[0]
	conns := []*nats.Conn{w.c.connect(t, 0), w.c.connect(t, 1), w.c.connect(t, 2)}
	id, a := w.register(t, conns[0], "dup", room, tl)
	if id == nil {
		t.Fatalf("register: %+v", a)
	}
	data := w.addRequest(t, room, id)
	const copies = 100
	var (
		mu      sync.Mutex
		codes   = map[int]int{}
		reasons = map[string]int{}
		wg      sync.WaitGroup
	)
	startGate := make(chan struct{})
	for i := range copies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-startGate
			_, seen := send(conns[i%3], subjects.Subject(subjects.DefaultPrefix, subjects.OpRoomAdd), data, tl)
			mu.Lock()
			for _, a := range seen {
				codes[a.code]++
				reasons[fmt.Sprintf("%d %s", a.code, a.reason)]++
			}
			mu.Unlock()
		}()
	}
	close(startGate)
	wg.Wait()
	accepted := codes[0]
	t.Logf("same-request: sent %d copies (%d attempts): accepted=%d already-applied(208)=%d replay(401)=%d retryable=%d other=%v",
		copies, copies+tl.retries, accepted, codes[subjects.CodeAlreadyApplied], codes[subjects.CodeUnauthorized],
		codes[-1]+codes[subjects.CodeUnavailable], reasons)
	if accepted != 1 {
		t.Errorf("%d copies accepted, want exactly 1", accepted)
	}
	for code, n := range codes {
		switch code {
		case 0, subjects.CodeAlreadyApplied, subjects.CodeUnauthorized, subjects.CodeUnavailable, -1:
		default:
			t.Errorf("%d copies answered %d", n, code)
		}
	}
	w.mu.Lock()
	w.added[room][id.Endpoint] = true
	w.mu.Unlock()
	// Every copy wrote or found the same sealed-key object; the one the
	// committed copy references must be whole.
	ctx, cancel := context.WithTimeout(context.Background(), opDeadline)
	defer cancel()
	if key, _, err := client.New(conns[0], id, client.WithRetries(5)).Key(ctx, room, 0); err != nil || !bytes.Equal(key, w.keys[room]) {
		t.Errorf("the added member's sealed key after %d concurrent copies: %v", copies, err)
	}
	tl.driven, tl.acked = copies, 1
	w.verify(t, "same-request", tl)
}

// sameRead sends one captured signed read 100 times concurrently, spread
// over the three nodes (so over every replica): the read-claims stream (R3,
// memory) must accept exactly one copy cluster-wide.
func (w *faultWorld) sameRead(t *testing.T) {
	conns := []*nats.Conn{w.c.connect(t, 0), w.c.connect(t, 1), w.c.connect(t, 2)}
	data := signed(t, w.c.admin.Sign, subjects.OpWhoami, api.Empty{})
	const copies = 100
	var (
		mu      sync.Mutex
		reasons = map[string]int{}
		wg      sync.WaitGroup
	)
	startGate := make(chan struct{})
	for i := range copies {
		wg.Go(func() {
			<-startGate
			a := sendOnce(conns[i%3], subjects.Subject(subjects.DefaultPrefix, subjects.OpWhoami), data, attemptTimeout)
			mu.Lock()
			reasons[fmt.Sprintf("%d %s", a.code, a.reason)]++
			mu.Unlock()
		})
	}
	close(startGate)
	wg.Wait()
	t.Logf("same-read: %d copies over 3 nodes: %v", copies, reasons)
	if reasons["0 "] != 1 {
		t.Errorf("%d copies accepted, want exactly 1", reasons["0 "])
	}
	if n := reasons["401 replay"]; n != copies-1 {
		t.Errorf("%d copies refused as replays, want %d (all the others): %v", n, copies-1, reasons)
	}
}

// raceOp is one acknowledged operation of the race test.
type raceCounts struct {
	mu      sync.Mutex
	adds    map[string]int
	removes map[string]int
	rekeys  int
}

// race lets two owners' clients, served by two different replicas, add,
// remove and rekey in one room concurrently. A serial order of the
// acknowledged operations must explain the final state: per endpoint the
// acknowledged adds and removes alternate (so adds-removes is 0 or 1 and
// says whether it is a member), and the epoch is 1 + acknowledged rekeys.
func (w *faultWorld) race(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), opDeadline)
	defer cancel()
	owner := w.ownerClient(t, 0)
	admin := client.New(w.c.connect(t, 0), w.c.admin, client.WithRetries(10), client.WithTimeout(attemptTimeout))
	const room = "race"
	var candidates []*identity.Identity
	for i := range 6 {
		id, _ := identity.New(fmt.Sprintf("racer%d", i))
		pub, _ := id.Public()
		if _, err := admin.Register(ctx, pub, false); err != nil {
			t.Fatalf("register: %v", err)
		}
		candidates = append(candidates, id)
	}
	if _, _, err := owner.CreateRoom(ctx, room, "chat.race", nil); err != nil {
		t.Fatalf("create: %v", err)
	}
	sealer, _ := w.owner.XKey.PublicKey()
	rc := &raceCounts{adds: map[string]int{}, removes: map[string]int{}}
	tl := newTally()
	tl.retryConflicts = false
	var budget atomic.Int64
	budget.Store(raceOps)
	deadline := time.Now().Add(raceTimeLimit)
	var wg sync.WaitGroup
	for worker := range 2 {
		nc := w.c.connect(t, worker)
		cl := client.New(nc, w.owner, client.WithRetries(10), client.WithBackoff(200*time.Millisecond), client.WithTimeout(attemptTimeout))
		rng := rand.New(rand.NewPCG(uint64(worker), uint64(time.Now().UnixNano())))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for budget.Add(-1) >= 0 && time.Now().Before(deadline) {
				octx, ocancel := context.WithTimeout(context.Background(), opDeadline)
				cand := candidates[rng.IntN(len(candidates))]
				// Reads race too: what they saw may be stale by the
				// time the mutation lands, and the service must refuse it
				// then (409 or 400), never apply it on a stale view.
				allowed := []int{subjects.CodeConflict, subjects.CodeNotFound, subjects.CodeBadRequest}
				switch p := rng.IntN(10); {
				case p < 4: // add
					key, epoch, err := cl.Key(octx, room, 0)
					if err != nil {
						tl.mu.Lock()
						tl.nonRetryable = append(tl.nonRetryable, fmt.Sprintf("owner key: %v", err))
						tl.mu.Unlock()
						break
					}
					pub, _ := cand.Public()
					s, _ := w.owner.XKey.Seal(key, pub.XKey)
					if ok, _ := mutate(nc, subjects.OpRoomAdd, signed(t, w.owner.Sign, subjects.OpRoomAdd, &api.AddMemberRequest{
						Room: room, Epoch: epoch, Sealer: sealer, Member: api.SealedKey{Endpoint: cand.Endpoint, Sealed: s}}), tl, allowed...); ok {
						rc.mu.Lock()
						rc.adds[cand.Endpoint]++
						rc.mu.Unlock()
					}
				case p < 8: // remove
					if ok, _ := mutate(nc, subjects.OpRoomRemove, signed(t, w.owner.Sign, subjects.OpRoomRemove,
						&api.RemoveMemberRequest{Room: room, Endpoint: cand.Endpoint}), tl, allowed...); ok {
						rc.mu.Lock()
						rc.removes[cand.Endpoint]++
						rc.mu.Unlock()
					}
				default: // rekey
					r, err := cl.Room(octx, room)
					var members []api.Member
					if err == nil {
						members, err = cl.AllMembers(octx, room)
					}
					if err != nil {
						tl.mu.Lock()
						tl.nonRetryable = append(tl.nonRetryable, fmt.Sprintf("owner read: %v", err))
						tl.mu.Unlock()
						break
					}
					key, _ := client.NewRoomKey()
					var keys []api.SealedKey
					for _, m := range members {
						s, _ := w.owner.XKey.Seal(key, m.XKey)
						keys = append(keys, api.SealedKey{Endpoint: m.Endpoint, Sealed: s})
					}
					if ok, _ := mutate(nc, subjects.OpRoomRekey, signed(t, w.owner.Sign, subjects.OpRoomRekey,
						&api.RekeyRequest{Room: room, Epoch: r.Epoch + 1, Sealer: sealer, Keys: keys}), tl, allowed...); ok {
						rc.mu.Lock()
						rc.rekeys++
						rc.mu.Unlock()
					}
				}
				ocancel()
			}
		}()
	}
	wg.Wait()

	r, err := owner.Room(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	members, err := owner.AllMembers(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, m := range members {
		have[m.Endpoint] = true
	}
	lost, dups := 0, 0
	for _, cand := range candidates {
		e := cand.Endpoint
		net := rc.adds[e] - rc.removes[e]
		if net != 0 && net != 1 {
			dups++
			t.Errorf("%s: %d acknowledged adds and %d removes cannot alternate", e, rc.adds[e], rc.removes[e])
		}
		if have[e] != (net == 1) {
			lost++
			t.Errorf("%s: member=%v, but acknowledged adds %d and removes %d", e, have[e], rc.adds[e], rc.removes[e])
		}
	}
	if want := uint64(1 + rc.rekeys); r.Epoch != want {
		lost++
		t.Errorf("epoch %d, want 1 + %d acknowledged rekeys", r.Epoch, rc.rekeys)
	}
	if r.Members != len(members) {
		dups++
		t.Errorf("room counts %d members, lists %d", r.Members, len(members))
	}
	// The current key was sealed to exactly the current members: each
	// opens the same key the owner does.
	ownerKey, epoch, err := owner.Key(ctx, room, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, cand := range candidates {
		if !have[cand.Endpoint] {
			continue
		}
		k, e, err := clientAt(t, w.c.nodes[2].clientURL, cand).Key(ctx, room, 0)
		if err != nil || e != epoch || !bytes.Equal(k, ownerKey) {
			lost++
			t.Errorf("%s: key of epoch %d: %v (epoch %d)", cand.Endpoint, epoch, err, e)
		}
	}
	t.Logf("race: %s; acked adds=%v removes=%v rekeys=%d; final epoch=%d members=%d; lost=%d duplicates=%d",
		tl, rc.adds, rc.removes, rc.rekeys, r.Epoch, len(members), lost, dups)
	if len(tl.nonRetryable) > 0 {
		t.Errorf("non-retryable errors: %v", tl.nonRetryable)
	}
	if tl.acked == 0 {
		t.Error("no operation was acknowledged")
	}
}

// partition leaves one node alone: its replica must answer 503 to
// mutations and reads and accept nothing. The same signed mutation, sent
// again after the other nodes are back, is applied exactly once.
func (w *faultWorld) partition(t *testing.T) {
	tl := newTally()
	room := w.rooms[1]
	alone := w.c.nodes[2]
	nc := w.c.connect(t, 2)
	id, a := w.register(t, nc, "part", room, tl)
	if id == nil {
		t.Fatalf("register: %+v", a)
	}

	for _, n := range w.c.nodes[:2] {
		t.Logf("SIGKILL %s", n.name)
		n.kill(t)
	}
	// Only alone's connection can carry requests now, to alone's replica.
	ncAlone, err := nats.Connect(alone.clientURL)
	if err != nil {
		t.Fatal(err)
	}
	defer ncAlone.Close()
	add := w.addRequest(t, room, id)
	codes := map[int]int{}
	const tries = 3
	for range tries {
		a := sendOnce(ncAlone, subjects.Subject(subjects.DefaultPrefix, subjects.OpRoomAdd), add, 3*attemptTimeout)
		codes[a.code]++
		read := signed(t, w.reader.Sign, subjects.OpRoomGet, &api.RoomRequest{Room: room})
		b := sendOnce(ncAlone, subjects.Subject(subjects.DefaultPrefix, subjects.OpRoomGet), read, 3*attemptTimeout)
		codes[b.code]++
	}
	t.Logf("partition: replica on %s alone answered %v to %d mutations and %d reads", alone.name, codes, tries, tries)
	if codes[subjects.CodeUnavailable] != 2*tries {
		t.Errorf("minority replica answered %v, want %d × 503", codes, 2*tries)
	}

	w.c.startAll(t, w.c.nodes[:2]...)
	w.c.waitCurrent(t, nc)
	ok, final := mutate(nc, subjects.OpRoomAdd, add, tl)
	if !ok {
		t.Fatalf("the same signed add after the partition healed: %+v", final)
	}
	w.mu.Lock()
	w.added[room][id.Endpoint] = true
	w.mu.Unlock()
	t.Logf("partition: resent mutation answered %d after the partition healed", final.code)
	w.verify(t, "partition", tl)
}

// restartAll SIGKILLs every node and starts the cluster again from its data
// directories: all state is back, and a read accepted before is still a
// replay.
func (w *faultWorld) restartAll(t *testing.T) {
	tl := newTally()
	ctx, cancel := context.WithTimeout(context.Background(), opDeadline)
	defer cancel()
	nc := w.c.connect(t, 0)
	room := w.rooms[0]
	read := signed(t, w.reader.Sign, subjects.OpRoomGet, &api.RoomRequest{Room: room})
	if a := sendOnce(nc, subjects.Subject(subjects.DefaultPrefix, subjects.OpRoomGet), read, attemptTimeout); a.code != 0 {
		t.Fatalf("read before restart: %+v", a)
	}
	owner := w.ownerClient(t, 1)
	before := map[string]api.Room{}
	for _, r := range append(slices.Clone(w.rooms), "race") {
		got, err := owner.Room(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		before[r] = *got
	}

	for _, n := range w.c.nodes {
		n.kill(t)
	}
	t.Log("SIGKILLed every node; starting them again from their data directories")
	restart := time.Now()
	w.c.startAll(t, w.c.nodes...)
	w.c.waitCurrent(t, nc)
	t.Logf("cluster back in %s", time.Since(restart).Round(time.Millisecond))

	a, _ := send(nc, subjects.Subject(subjects.DefaultPrefix, subjects.OpRoomGet), read, tl)
	t.Logf("restart: replayed pre-restart read answered %d %s", a.code, a.reason)
	// The whole cluster lost the read claims (memory); the nonce floor
	// refuses every read stamped before the restart (docs/security.md §4a).
	if a.code != subjects.CodeUnauthorized || a.reason != api.KindNonceFloor.Reason() {
		t.Errorf("replayed read after restart: code %d reason %q, want 401 nonce_floor", a.code, a.reason)
	}
	for id, r := range before {
		got, err := owner.Room(ctx, id)
		if err != nil {
			t.Fatalf("room %s after restart: %v", id, err)
		}
		if *got != r {
			t.Errorf("room %s after restart = %+v, want %+v", id, *got, r)
		}
	}
	reader := client.New(w.c.connect(t, 2), w.reader, client.WithRetries(10), client.WithTimeout(attemptTimeout))
	for _, r := range w.rooms {
		key, _, err := reader.Key(ctx, r, 0)
		if err != nil || !bytes.Equal(key, w.keys[r]) {
			t.Errorf("sealed key of %s after restart: %v", r, err)
		}
	}
	// A member added mid-epoch opens its own sealed key object.
	w.mu.Lock()
	var some *identity.Identity
	for e := range w.added[w.rooms[0]] {
		some = w.registered[e]
		break
	}
	w.mu.Unlock()
	if some != nil {
		key, _, err := client.New(nc, some, client.WithRetries(10)).Key(ctx, w.rooms[0], 0)
		if err != nil || !bytes.Equal(key, w.keys[w.rooms[0]]) {
			t.Errorf("%s's sealed key after restart: %v\n%s", some.Endpoint, err, w.c.logTails())
		}
	}
	tl.driven = 1
	tl.acked = 1 // the pre-restart read; verify needs an acknowledgement
	w.verify(t, "restart-all", tl)
}
