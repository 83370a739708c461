package service_test

import (
	"errors"
	"fmt"
	"maps"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/membership/client"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/subjects"
)

// TestIdentityCacheRevocation disables and re-enables an identity that keeps
// sending requests: no request that starts later than IdentityMaxStale after
// the change was acknowledged may see the old state.
func TestIdentityCacheRevocation(t *testing.T) {
	const maxStale = time.Second
	e := newEnv(t, service.Config{IdentityMaxStale: maxStale, Workers: 2, RateLimit: -1})
	id := e.register(t, "revoked")
	c := client.New(natstest.Connect(t, e.s), id, client.WithRetries(0))
	warm := time.Now().Add(3 * maxStale)
	for time.Now().Before(warm) { // the cache is loaded and fresh
		if _, err := c.Whoami(natstest.Ctx(t, 2)); err != nil {
			t.Fatalf("whoami while enabled: %v", err)
		}
	}
	for _, step := range []struct {
		name    string
		change  func() error
		refused bool
	}{
		{"disable", func() error { _, err := e.admin.Disable(natstest.Ctx(t, 2), "revoked"); return err }, true},
		{"enable", func() error { _, err := e.admin.Enable(natstest.Ctx(t, 2), "revoked"); return err }, false},
	} {
		if err := step.change(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		ack := time.Now()
		var took time.Duration
		for {
			start := time.Now()
			_, err := c.Whoami(natstest.Ctx(t, 2))
			if err != nil && !errors.Is(err, client.ErrForbidden) {
				t.Fatalf("%s: whoami: %v", step.name, err)
			}
			if (err != nil) == step.refused {
				took = start.Sub(ack)
				break
			}
			if start.Sub(ack) > maxStale {
				t.Fatalf("%s: old state still served %s after the change was acknowledged (bound %s)", step.name, start.Sub(ack), maxStale)
			}
		}
		// Once the new state shows, it stays.
		for i := 0; i < 20; i++ {
			if _, err := c.Whoami(natstest.Ctx(t, 2)); (err != nil) != step.refused {
				t.Fatalf("%s: state flapped back: %v", step.name, err)
			}
		}
		t.Logf("%s took effect %s after its acknowledgement", step.name, took)
	}
}

// TestIdentityCacheKeyRotation replaces an identity's signing key: the old
// key is refused, the new one accepted, within the bound.
func TestIdentityCacheKeyRotation(t *testing.T) {
	const maxStale = time.Second
	e := newEnv(t, service.Config{IdentityMaxStale: maxStale, RateLimit: -1})
	old := e.register(t, "rotating")
	oc := client.New(natstest.Connect(t, e.s), old, client.WithRetries(0))
	if _, err := oc.Whoami(natstest.Ctx(t, 2)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * maxStale)
	if _, err := oc.Whoami(natstest.Ctx(t, 2)); err != nil {
		t.Fatal(err)
	}
	fresh, err := identity.New("rotating")
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := fresh.Public()
	if _, err := e.admin.Register(natstest.Ctx(t, 2), pub, false); err != nil {
		t.Fatal(err)
	}
	ack := time.Now()
	nc := client.New(natstest.Connect(t, e.s), fresh, client.WithRetries(0))
	for {
		start := time.Now()
		_, err := oc.Whoami(natstest.Ctx(t, 2))
		if errors.Is(err, client.ErrUnauthenticated) {
			break
		}
		if err != nil {
			t.Fatalf("old key: %v", err)
		}
		if start.Sub(ack) > maxStale {
			t.Fatalf("old signing key still accepted %s after the rotation", start.Sub(ack))
		}
	}
	if _, err := nc.Whoami(natstest.Ctx(t, 2)); err != nil {
		t.Fatalf("new key refused: %v", err)
	}
}

// TestCachesDisabled runs the read paths with both caches off.
func TestCachesDisabled(t *testing.T) {
	e := newEnv(t, service.Config{IdentityMaxStale: -1, KeyCacheBytes: -1, RateLimit: -1})
	id := e.register(t, "nocache")
	c := client.New(natstest.Connect(t, e.s), id, client.WithRetries(0))
	if _, key, err := c.CreateRoom(natstest.Ctx(t, 2), "nocache-room", "chat.nocache", nil); err != nil {
		t.Fatal(err)
	} else {
		got, _, err := c.Key(natstest.Ctx(t, 2), "nocache-room", 0)
		if err != nil || string(got) != string(key) {
			t.Fatalf("key = %x, %v; want %x", got, err, key)
		}
	}
	if _, err := e.admin.Disable(natstest.Ctx(t, 2), "nocache"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Whoami(natstest.Ctx(t, 2)); !errors.Is(err, client.ErrForbidden) {
		t.Fatalf("whoami right after disable without a cache: %v, want forbidden", err)
	}
}

// TestIdleReplicaWritesNothing: a replica that serves no request writes
// nothing to any stream (issue 15, "silent when idle": the identity cache
// proves its freshness by reading the stream's revisions, not by writing
// probe keys), and its identity cache still answers afterwards without
// reading the signer's key. The window is as many freshness proofs as 30 s
// at the default IdentityMaxStale, at a tenth of its length and of the
// interval between proofs.
func TestIdleReplicaWritesNothing(t *testing.T) {
	const scale = 10
	maxStale, idle := service.DefaultIdentityMaxStale/scale, 30*time.Second/scale
	e := newEnv(t, service.Config{IdentityMaxStale: maxStale, RateLimit: -1})
	id := e.register(t, "idle")
	c := client.New(natstest.Connect(t, e.s), id, client.WithRetries(0))
	pub, _ := id.Public()
	signerReads := countSubject(t, e.nc, "$JS.API.DIRECT.GET.KV_"+subjects.DefaultBucket+".$KV."+subjects.DefaultBucket+".signer."+pub.SignKey)
	// cached says whether a whoami was answered without reading the
	// signer's key, i.e. from a fresh identity cache.
	cached := func() error {
		before := signerReads()
		if _, err := c.Whoami(natstest.Ctx(t, 2)); err != nil {
			t.Fatal(err)
		}
		if err := e.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		if n := signerReads() - before; n != 0 {
			return fmt.Errorf("whoami read the signer's key %d times", n)
		}
		return nil
	}
	natstest.Eventually(t, 1, "whoami answered from the identity cache", cached)
	before := streamSeqs(t, e)
	select {
	case <-time.After(idle): // the condition is that this much time passed
	case <-natstest.Ctx(t, 2).Done():
	}
	if after := streamSeqs(t, e); !maps.Equal(before, after) {
		t.Errorf("streams' last sequences moved while idle for %s: %v → %v", idle, before, after)
	}
	if err := cached(); err != nil {
		t.Errorf("after %s idle the cache was not kept fresh: %v", idle, err)
	}
}

// streamSeqs is every stream's last sequence.
func streamSeqs(t *testing.T, e *env) map[string]uint64 {
	t.Helper()
	js := natstest.JetStream(t, e.nc)
	out := map[string]uint64{}
	streams := js.ListStreams(natstest.Ctx(t, 2))
	for info := range streams.Info() {
		out[info.Config.Name] = info.State.LastSeq
	}
	if err := streams.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// countSubject counts the messages published on subject.
func countSubject(t *testing.T, nc *nats.Conn, subject string) func() int64 {
	t.Helper()
	var n atomic.Int64
	sub, err := nc.Subscribe(subject, func(*nats.Msg) { n.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return n.Load
}
