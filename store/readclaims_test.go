package store_test

import (
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/store"
	"github.com/unibus/membership/subjects"
)

// claimOK claims key and fails the test unless the claim is confirmed.
func claimOK(t *testing.T, st *store.Store, key string) store.ReadSince {
	t.Helper()
	since, err := st.ClaimRead(natstest.Ctx(t, 1), key)
	if err != nil {
		t.Fatalf("ClaimRead(%s): %v", key, err)
	}
	return since
}

// claimAfterLoss claims key on a store that has not yet noticed that the
// claims were lost. On a single replica the claim's publish carries its
// marker check, so the claim is refused by the stream, nothing is stored,
// and the store claims again in the new incarnation at once. On a
// replicated stream the claim is stored first and its check then fails:
// the attempt must fail (the claim proves nothing), and a retry (a read is
// signed anew, with another nonce) must be confirmed in a new incarnation.
func claimAfterLoss(t *testing.T, st *store.Store, key string, replicated bool) store.ReadSince {
	t.Helper()
	if !replicated {
		return claimOK(t, st, key)
	}
	_, err := st.ClaimRead(natstest.Ctx(t, 1), key)
	if !errors.Is(err, store.ErrReadClaimsLost) {
		t.Fatalf("first claim after the loss: %v, want ErrReadClaimsLost", err)
	}
	return claimOK(t, st, key+".retry")
}

func TestReadClaims(t *testing.T) {
	st, js, _, _ := open(t)
	ctx := natstest.Ctx(t, 1)

	t.Run("first sight wins", func(t *testing.T) {
		since := claimOK(t, st, "nonce.U1.a")
		if !since.First {
			t.Fatalf("a fresh deployment's incarnation is not its first: %+v", since)
		}
		if _, err := st.ClaimRead(ctx, "nonce.U1.a"); !errors.Is(err, store.ErrExists) {
			t.Fatalf("second claim: %v, want ErrExists", err)
		}
		claimOK(t, st, "nonce.U1.b")
		if n, err := st.ReadClaims(ctx); err != nil || n != 2 {
			t.Fatalf("ReadClaims = %d, %v; want 2", n, err)
		}
	})

	t.Run("concurrent claims of one key", func(t *testing.T) {
		var wg sync.WaitGroup
		won := make(chan int, 16)
		for i := range 16 {
			wg.Go(func() {
				if _, err := st.ClaimRead(ctx, "nonce.U1.race"); err == nil {
					won <- i
				} else if !errors.Is(err, store.ErrExists) {
					t.Errorf("claim %d: %v", i, err)
				}
			})
		}
		wg.Wait()
		close(won)
		if n := len(won); n != 1 {
			t.Fatalf("%d of 16 concurrent claims of one key won, want 1", n)
		}
	})

	t.Run("expire after the TTL", func(t *testing.T) {
		claimOK(t, st, "nonce.U1.ttl")
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, err := st.ClaimRead(ctx, "nonce.U1.ttl")
			if err == nil {
				break
			}
			if !errors.Is(err, store.ErrExists) || time.Now().After(deadline) {
				t.Fatalf("claim after the TTL (2 s): %v", err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	t.Run("a loss starts a new incarnation, seen by every replica", func(t *testing.T) {
		other, err := store.Open(ctx, js, testConfig()) // a second replica
		if err != nil {
			t.Fatal(err)
		}
		before := claimOK(t, st, "nonce.U1.before")
		claimOK(t, other, "nonce.U1.other")
		s, err := js.Stream(ctx, subjects.ReadClaimsStream(bucket))
		if err != nil {
			t.Fatal(err)
		}
		lost := time.Now()
		if err := s.Purge(ctx); err != nil { // the claims are gone, as in a crash
			t.Fatal(err)
		}
		since := claimAfterLoss(t, st, "nonce.U1.after", false)
		if since.First || since.Start.Before(lost.Add(-time.Second)) || !since.Start.After(before.Start) {
			t.Fatalf("incarnation after the loss %+v (before: %+v, lost at %s): want a later, not-first one", since, before, lost)
		}
		// The other replica never saw the loss: its next claim must not
		// be confirmed under the old incarnation.
		got := claimAfterLoss(t, other, "nonce.U1.other2", false)
		if got != since {
			t.Fatalf("the other replica adopted %+v, want %+v", got, since)
		}
	})

	t.Run("a deleted stream is recreated", func(t *testing.T) {
		if err := js.DeleteStream(ctx, subjects.ReadClaimsStream(bucket)); err != nil {
			t.Fatal(err)
		}
		since := claimOK(t, st, "nonce.U1.recreated") // the stream was missing: no claim was stored in it
		if since.First {
			t.Fatal("a recreated stream counts as the deployment's first")
		}
	})
}

// TestReadClaimsStandaloneRestart: a standalone server restarted on its data
// directory has lost the memory stream's claims; the store notices, and the
// new incarnation starts after the restart.
func TestReadClaimsStandaloneRestart(t *testing.T) {
	dir := t.TempDir()
	open := func() (*server.Server, *store.Store) {
		s := natstest.ServerWith(t, &server.Options{StoreDir: dir})
		st, err := store.Open(natstest.Ctx(t, 1), jetStream(t, natstest.Connect(t, s)), testConfig())
		if err != nil {
			t.Fatal(err)
		}
		return s, st
	}
	s, st := open()
	before := claimOK(t, st, "nonce.U1.a")
	s.Shutdown()
	s.WaitForShutdown()
	restarted := time.Now()

	_, st2 := open()
	since := claimOK(t, st2, "nonce.U1.a")
	if since.First || since.Start.Before(restarted) || since == before {
		t.Fatalf("after the restart: %+v, want a new incarnation started after %s (before: %+v)", since, restarted, before)
	}
	if _, err := st2.ClaimRead(natstest.Ctx(t, 1), "nonce.U1.a"); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second claim after the restart: %v", err)
	}
}

// TestReadClaimsWiderWindow: a larger claim TTL (a larger skew) widens an
// existing stream's duplicate window.
func TestReadClaimsWiderWindow(t *testing.T) {
	_, js, _, _ := open(t) // claim TTL 2 s
	cfg := testConfig()
	cfg.MaxTTL = time.Minute
	st, err := store.Open(natstest.Ctx(t, 1), js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(natstest.Ctx(t, 1), subjects.ReadClaimsStream(bucket))
	if err != nil {
		t.Fatal(err)
	}
	if d := s.CachedInfo().Config.Duplicates; d != time.Minute {
		t.Fatalf("duplicate window %s, want 1m", d)
	}
	claimOK(t, st, "nonce.U1.wide")
}

// TestReadClaimsShape: an existing claims stream with other settings is
// refused, never changed.
func TestReadClaimsShape(t *testing.T) {
	js := jetStream(t, natstest.Connect(t, natstest.Server(t)))
	ctx := natstest.Ctx(t, 1)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: subjects.ReadClaimsStream(bucket), Subjects: []string{subjects.ReadClaims(bucket)}, Storage: jetstream.FileStorage,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Open(ctx, js, testConfig()); !errors.Is(err, store.ErrBucketConfig) {
		t.Fatalf("Open with a file-storage claims stream: %v, want ErrBucketConfig", err)
	}
}

func jetStream(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js := natstest.JetStream(t, nc)
	return js
}

// TestReadClaimsReplicated: on an R3 claims stream (three nodes) claims are
// confirmed by the shared marker check, not by a check on the publish,
// which nats-server admits once per subject in flight: concurrent claims
// of different keys all win; after a loss a claim stored under the old
// marker is refused and a retry is confirmed in the new incarnation.
func TestReadClaimsReplicated(t *testing.T) {
	nodes := natstest.Cluster(t, 3)
	js := natstest.JetStream(t, natstest.Connect(t, nodes[0]))
	cfg := testConfig()
	cfg.Replicas = 3
	ctx := natstest.Ctx(t, 2)
	st, err := store.Open(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	before := claimOK(t, st, "nonce.U1.first")
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			if _, err := st.ClaimRead(ctx, "nonce.U1.c"+strconv.Itoa(i)); err != nil {
				t.Errorf("concurrent claim %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	s, err := js.Stream(ctx, subjects.ReadClaimsStream(bucket))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	if since := claimAfterLoss(t, st, "nonce.U1.after", true); since.First || !since.Start.After(before.Start) {
		t.Fatalf("incarnation after the loss %+v, before %+v: want a later, not-first one", since, before)
	}
}
