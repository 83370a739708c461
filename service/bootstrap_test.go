package service_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/store"
)

func TestBootstrap(t *testing.T) {
	s := natstest.Server(t)
	membertest.Service(t, s, service.Config{})
	st := membertest.Store(t, natstest.Connect(t, s))
	ctx := natstest.Ctx(t, 2)
	root, err := identity.New("root")
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := root.Public()

	ok, err := service.Bootstrap(ctx, st, pub)
	if err != nil || !ok {
		t.Fatalf("first Bootstrap = %v, %v; want true, nil", ok, err)
	}
	rootC := client.New(natstest.Connect(t, s), root)
	me, err := rootC.Whoami(ctx)
	if err != nil || !me.Admin || me.SignKey != pub.SignKey || me.XKey != pub.XKey {
		t.Fatalf("whoami after bootstrap = %+v, %v", me, err)
	}
	if ok, err := service.Bootstrap(ctx, st, pub); err != nil || ok {
		t.Fatalf("second Bootstrap = %v, %v; want false, nil", ok, err)
	}

	other, _ := identity.New("root")
	otherPub, _ := other.Public()
	member, _ := identity.New("member")
	memberPub, _ := member.Public()
	if _, err := rootC.Register(ctx, memberPub, false); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		pub  api.PublicKeys
		kind error // nil: any error
	}{
		{"same endpoint, other keys", otherPub, nil},
		{"same endpoint, other signing key", api.PublicKeys{Endpoint: "root", SignKey: otherPub.SignKey, XKey: pub.XKey}, nil},
		{"same endpoint, other xkey", api.PublicKeys{Endpoint: "root", SignKey: pub.SignKey, XKey: otherPub.XKey}, nil},
		{"registered without the admin role", memberPub, nil},
		{"signing key of another endpoint", api.PublicKeys{Endpoint: "root2", SignKey: pub.SignKey, XKey: otherPub.XKey}, nil},
		{"bad endpoint", api.PublicKeys{Endpoint: "a.b", SignKey: pub.SignKey, XKey: pub.XKey}, api.ErrInvalid},
		{"curve key as signing key", api.PublicKeys{Endpoint: "x", SignKey: pub.XKey, XKey: pub.XKey}, api.ErrInvalid},
		{"user key as xkey", api.PublicKeys{Endpoint: "x", SignKey: otherPub.SignKey, XKey: otherPub.SignKey}, api.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, err := service.Bootstrap(ctx, st, tt.pub)
			if err == nil || ok {
				t.Fatalf("Bootstrap = %v, %v; want an error", ok, err)
			}
			if tt.kind != nil && !errors.Is(err, tt.kind) {
				t.Fatalf("Bootstrap = %v, want %v", err, tt.kind)
			}
		})
	}
	// Nothing above replaced the original keys or roles.
	if me, err := rootC.Whoami(ctx); err != nil || !me.Admin || me.SignKey != pub.SignKey {
		t.Fatalf("whoami after refused bootstraps = %+v, %v", me, err)
	}
	if m, err := client.New(natstest.Connect(t, s), member).Whoami(ctx); err != nil || m.Admin {
		t.Fatalf("member after refused bootstrap = %+v, %v", m, err)
	}
	for _, e := range []string{"root2", "x"} {
		if _, err := rootC.Lookup(ctx, e); !errors.Is(err, client.ErrNotFound) {
			t.Fatalf("Lookup(%s) = %v, want ErrNotFound", e, err)
		}
	}
}

// TestBootstrapConcurrent: replicas bootstrapping the same admin at once
// register it exactly once and all succeed.
func TestBootstrapConcurrent(t *testing.T) {
	s := natstest.Server(t)
	id, _ := identity.New("admin")
	pub, _ := id.Public()
	const n = 4
	stores := make([]*store.Store, n)
	for i := range stores {
		stores[i] = membertest.Store(t, natstest.Connect(t, s))
	}
	ctx := natstest.Ctx(t, 2)
	var wg sync.WaitGroup
	results := make([]bool, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { results[i], errs[i] = service.Bootstrap(ctx, stores[i], pub) })
	}
	wg.Wait()
	registered := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Bootstrap %d: %v", i, errs[i])
		}
		if results[i] {
			registered++
		}
	}
	if registered != 1 {
		t.Fatalf("%d bootstraps registered, want 1", registered)
	}
}

// TestBootstrapDanglingSigner: a signer index that names the endpoint while
// its identity record is missing (a hand-edited or damaged bucket) is
// reported at once, not looked at again and again until the context ends.
func TestBootstrapDanglingSigner(t *testing.T) {
	s := natstest.Server(t)
	st := membertest.Store(t, natstest.Connect(t, s))
	id, _ := identity.New("root")
	pub, _ := id.Public()
	owner, err := msgpack.Marshal("root")
	if err != nil {
		t.Fatal(err)
	}
	// The key layout of the signer index (service/records.go).
	if err := st.Commit(natstest.Ctx(t, 2), []store.Write{{Key: "signer." + pub.SignKey, Value: owner}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	ok, err := service.Bootstrap(ctx, st, pub)
	if err == nil || ok {
		t.Fatalf("Bootstrap = %v, %v; want an error", ok, err)
	}
	if errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("Bootstrap gave up only after %s: %v", time.Since(start), err)
	}
}
