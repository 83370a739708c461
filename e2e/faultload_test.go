//go:build long

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/subjects"
)

// The fault tests run one 3-node cluster of membershipd processes (each a
// nats-server node with R3 buckets and a service replica) and inject real
// faults into it: SIGKILL, SIGSTOP, a lost quorum, a restart of everything.
// Mutations are sent the way the client library sends them — one signed
// request, resent unchanged after a timeout, no responders or 503 — by a
// sender that sees every attempt, so that each fault's figures (operations,
// acknowledged, lost, duplicates, retries) are exact.

// faultWorld is the state the fault load builds and checks: who is
// registered, which rooms exist with which key, every acknowledged add.
type faultWorld struct {
	c      *testCluster
	owner  *identity.Identity
	reader *identity.Identity
	keys   map[string][]byte // room -> epoch 1 key
	rooms  []string

	mu         sync.Mutex
	registered map[string]*identity.Identity // acknowledged registrations
	added      map[string]map[string]bool    // room -> endpoints whose add was acknowledged
	attempted  map[string]map[string]bool    // room -> endpoints an add was sent for
	seq        atomic.Int64
}

// setupWorld registers an owner and a reader and creates the load's rooms.
func setupWorld(t *testing.T, c *testCluster) *faultWorld {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opDeadline)
	defer cancel()
	admin := client.New(c.connect(t, 0), c.admin, client.WithRetries(10), client.WithBackoff(200*time.Millisecond), client.WithTimeout(attemptTimeout))
	w := &faultWorld{c: c, keys: map[string][]byte{}, registered: registerNew(ctx, t, admin, "owner", "reader"),
		added: map[string]map[string]bool{}, attempted: map[string]map[string]bool{}}
	w.owner, w.reader = w.registered["owner"], w.registered["reader"]
	owner := w.ownerClient(t, 1)
	for i := range 3 {
		room := fmt.Sprintf("f%d", i+1)
		_, key, err := owner.CreateRoom(ctx, room, "chat."+room, []string{"reader"})
		if err != nil {
			t.Fatalf("create %s: %v", room, err)
		}
		w.keys[room] = key
		w.rooms = append(w.rooms, room)
		w.added[room], w.attempted[room] = map[string]bool{}, map[string]bool{}
	}
	return w
}

func (w *faultWorld) ownerClient(t *testing.T, node int) *client.Client {
	return client.New(w.c.connect(t, node), w.owner, client.WithRetries(10), client.WithBackoff(200*time.Millisecond), client.WithTimeout(attemptTimeout))
}

// registerAndAdd registers a fresh identity (admin) and adds it to room
// (owner), both as signed mutations through nc.
func (w *faultWorld) registerAndAdd(t *testing.T, nc *nats.Conn, room string, tl *tally) {
	id, _ := w.register(t, nc, "m", room, tl)
	if id == nil {
		return
	}
	if ok, _ := mutate(nc, subjects.OpRoomAdd, w.addRequest(t, room, id), tl); ok {
		w.mu.Lock()
		w.added[room][id.Endpoint] = true
		w.mu.Unlock()
	}
}

// register registers a fresh identity, named prefix and a sequence
// number, as a signed mutation of the admin through nc, and records it as
// registered and about to be added to room. It returns nil and the last
// attempt when the registration was not acknowledged.
func (w *faultWorld) register(t *testing.T, nc *nats.Conn, prefix, room string, tl *tally) (*identity.Identity, attempt) {
	id, _ := identity.New(fmt.Sprintf("%s%d", prefix, w.seq.Add(1)))
	pub, _ := id.Public()
	ok, a := mutate(nc, subjects.OpIdentityRegister, signed(t, w.c.admin.Sign, subjects.OpIdentityRegister,
		&api.RegisterRequest{Endpoint: pub.Endpoint, SignKey: pub.SignKey, XKey: pub.XKey}), tl)
	if !ok {
		return nil, a
	}
	w.mu.Lock()
	w.registered[id.Endpoint] = id
	w.attempted[room][id.Endpoint] = true
	w.mu.Unlock()
	return id, a
}

// addRequest is the owner's signed room.add of id at epoch 1.
func (w *faultWorld) addRequest(t *testing.T, room string, id *identity.Identity) []byte {
	pub, _ := id.Public()
	sealed, err := w.owner.XKey.Seal(w.keys[room], pub.XKey)
	if err != nil {
		t.Fatal(err)
	}
	sealer, _ := w.owner.XKey.PublicKey()
	return signed(t, w.owner.Sign, subjects.OpRoomAdd, &api.AddMemberRequest{Room: room, Epoch: 1, Sealer: sealer,
		Member: api.SealedKey{Endpoint: id.Endpoint, Sealed: sealed}})
}

// load runs a load — one mutation worker per room and one reader, each on
// its own node — for as long as fault runs, and stops it when fault returns
// or fails the test. The load has no bound of its own: with one (it had 150
// operations per worker, at most 900 acknowledgements) a quick cluster
// could finish it while the fault still waited for progress, and waitAcks
// then failed with a healthy cluster (KillStreamLeaderTwice: "900 of 905
// acknowledgements", LoadLastsAsLongAsItsFault). Every wait of a fault is
// bounded, and so is the load.
func (w *faultWorld) load(t *testing.T, fault func(tl *tally)) *tally {
	t.Helper()
	tl := newTally()
	stop := make(chan struct{})
	running := func() bool {
		select {
		case <-stop:
			return false
		default:
			return true
		}
	}
	var wg sync.WaitGroup
	for i, room := range w.rooms {
		nc := w.c.connect(t, i%len(w.c.nodes))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for running() {
				w.registerAndAdd(t, nc, room, tl)
			}
		}()
	}
	reader := client.New(w.c.connect(t, 2), w.reader, client.WithRetries(20), client.WithBackoff(200*time.Millisecond), client.WithTimeout(attemptTimeout))
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; running(); n++ {
			room := w.rooms[n%len(w.rooms)]
			ctx, cancel := context.WithTimeout(context.Background(), opDeadline)
			key, _, err := reader.Key(ctx, room, 1)
			cancel()
			tl.mu.Lock()
			tl.reads++
			switch {
			case err == nil && bytes.Equal(key, w.keys[room]):
				tl.readsOK++
			case err == nil:
				tl.nonRetryable = append(tl.nonRetryable, "room.key: wrong key")
			case errors.Is(err, client.ErrUnavailable) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders):
				tl.readRetries++ // ran out of retries on a retryable error
			default:
				tl.nonRetryable = append(tl.nonRetryable, fmt.Sprintf("room.key: %v", err))
			}
			tl.mu.Unlock()
		}
	}()
	defer func() { close(stop); wg.Wait() }() // also when fault fails the test
	fault(tl)
	return tl
}

// underLoad runs fault under the load between two checks that the load
// progresses (5 acknowledgements before it, 5 more once every replica is
// current again after it), then verifies what was acknowledged.
func (w *faultWorld) underLoad(t *testing.T, name string, watch *nats.Conn, fault func(tl *tally)) {
	t.Helper()
	tl := w.load(t, func(tl *tally) {
		waitAcks(t, tl, 5)
		fault(tl)
		w.c.waitCurrent(t, watch)
		waitAcks(t, tl, 5)
	})
	w.verify(t, name, tl)
}

// waitAcks waits until the load has acknowledged n more mutations.
func waitAcks(t *testing.T, tl *tally, n int) {
	t.Helper()
	tl.mu.Lock()
	target := tl.acked + n
	tl.mu.Unlock()
	deadline := time.Now().Add(faultProgressCap)
	for {
		tl.mu.Lock()
		acked := tl.acked
		tl.mu.Unlock()
		if acked >= target {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("load made no progress: %d of %d acknowledgements", acked, target)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// verify checks the cluster's state against every acknowledgement recorded
// so far and logs the figures. It returns lost and duplicates.
func (w *faultWorld) verify(t *testing.T, name string, tl *tally) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opDeadline)
	defer cancel()
	owner := w.ownerClient(t, 0)
	admin := client.New(w.c.connect(t, 1), w.c.admin, client.WithRetries(10), client.WithBackoff(200*time.Millisecond), client.WithTimeout(attemptTimeout))
	w.mu.Lock()
	defer w.mu.Unlock()
	lost, dups := 0, 0
	for _, room := range w.rooms {
		r, err := owner.Room(ctx, room)
		if err != nil {
			t.Fatalf("%s: room %s: %v", name, room, err)
		}
		members, err := owner.AllMembers(ctx, room)
		if err != nil {
			t.Fatalf("%s: members of %s: %v", name, room, err)
		}
		have := map[string]bool{}
		for _, m := range members {
			if have[m.Endpoint] {
				dups++
				t.Errorf("%s: %s listed twice in %s", name, m.Endpoint, room)
			}
			have[m.Endpoint] = true
		}
		for e := range w.added[room] {
			if !have[e] {
				lost++
				t.Errorf("%s: acknowledged add of %s to %s is lost", name, e, room)
			}
		}
		for e := range have {
			if e != "owner" && e != "reader" && !w.attempted[room][e] {
				dups++
				t.Errorf("%s: %s is a member of %s but no add was ever sent", name, e, room)
			}
		}
		if r.Members != len(members) {
			dups++
			t.Errorf("%s: room %s counts %d members, lists %d: an add was applied twice or half", name, room, r.Members, len(members))
		}
	}
	ids := map[string]api.Identity{}
	for after := ""; ; {
		p, err := admin.Identities(ctx, after, api.MaxPage)
		if err != nil {
			t.Fatalf("%s: list identities: %v", name, err)
		}
		for _, id := range p.Identities {
			ids[id.Endpoint] = id
		}
		if after = p.Next; after == "" {
			break
		}
	}
	for e, id := range w.registered {
		pub, _ := id.Public()
		if got, ok := ids[e]; !ok || got.SignKey != pub.SignKey {
			lost++
			t.Errorf("%s: acknowledged registration of %s is lost", name, e)
		}
	}
	tl.mu.Lock()
	nonRetryable := slices.Clone(tl.nonRetryable)
	tl.mu.Unlock()
	t.Logf("%s: %s; lost=%d duplicates=%d (state: %d identities, %d acknowledged adds checked)",
		name, tl, lost, dups, len(w.registered), w.addCount())
	if len(nonRetryable) > 0 {
		t.Errorf("%s: clients saw errors that are not retryable: %v", name, nonRetryable)
	}
	if lost != 0 || dups != 0 {
		t.Errorf("%s: lost=%d duplicates=%d, want 0", name, lost, dups)
	}
	if tl.acked == 0 {
		t.Errorf("%s: nothing was acknowledged", name)
	}
}

func (w *faultWorld) addCount() int {
	n := 0
	for _, m := range w.added {
		n += len(m)
	}
	return n
}
