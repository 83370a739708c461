// Package membertest is the upper layer of the test kit: the membership
// service on servers that internal/natstest starts, a bootstrapped admin,
// registered members, the shared service key, and requests written and read
// on the raw wire (signed envelopes, error headers, bucket dumps). Everything
// it starts is stopped through t.Cleanup.
package membertest

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/client"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/store"
	"github.com/unibus/membership/subjects"
)

// Shards is the number of room shards a deployment the kit creates gets:
// MEMBERSHIP_TEST_SHARDS, or 1 (the one-bucket layout). Running a suite
// with MEMBERSHIP_TEST_SHARDS=4 runs every test that goes through [Store]
// on four room shards (docs/protocol.md "Shards").
var Shards = sync.OnceValue(func() int {
	n, err := strconv.Atoi(os.Getenv("MEMBERSHIP_TEST_SHARDS"))
	if err != nil || n < 1 {
		return 1
	}
	return n
})

// Store opens the membership buckets on nc.
func Store(t testing.TB, nc *nats.Conn) *store.Store {
	t.Helper()
	js := natstest.JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), natstest.Patience)
	defer cancel()
	st, err := store.Open(ctx, js, store.Config{
		Bucket: subjects.DefaultBucket, KeysBucket: subjects.DefaultKeysBucket, MaxTTL: service.NonceTTL(service.DefaultSkew),
		NewShards: Shards(),
	})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	return st
}

// ServiceKey is the service key of every replica [Service] starts without
// one of its own, as every replica of a deployment shares one: clients,
// which verify replies by default, pin it on first use.
var ServiceKey = sync.OnceValue(func() nkeys.KeyPair {
	kp, err := nkeys.CreateServer()
	if err != nil {
		panic(err)
	}
	return kp
})

// ServicePub is the public key (N…) of [ServiceKey], the key clients pin.
func ServicePub() string {
	pub, _ := ServiceKey().PublicKey()
	return pub
}

// Service starts a service replica on its own connection to s.
func Service(t testing.TB, s *server.Server, cfg service.Config) *service.Service {
	t.Helper()
	if cfg.ServiceKey == nil {
		cfg.ServiceKey = ServiceKey()
	}
	nc := natstest.Connect(t, s)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	svc, err := service.Start(nc, Store(t, nc), cfg)
	if err != nil {
		t.Fatalf("start service: %v", err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	// Start returns once micro sent its subscriptions; the flush waits for
	// the server to register them, so a request right after this finds a
	// responder (a loaded machine answered "no responders" otherwise).
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush service subscriptions: %v", err)
	}
	return svc
}

// Admin bootstraps an admin identity named "admin" and returns a client for
// it on its own connection.
func Admin(t testing.TB, s *server.Server) *client.Client {
	t.Helper()
	id, err := identity.New("admin")
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := id.Public()
	nc := natstest.Connect(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), natstest.Patience)
	defer cancel()
	if _, err := service.Bootstrap(ctx, Store(t, nc), pub); err != nil {
		t.Fatalf("bootstrap admin: %v", err)
	}
	return client.New(nc, id)
}

// Member generates an identity, registers it through admin and returns a
// client for it.
func Member(t testing.TB, s *server.Server, admin *client.Client, endpoint string) *client.Client {
	t.Helper()
	id, err := identity.New(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := id.Public()
	ctx, cancel := context.WithTimeout(context.Background(), natstest.Patience)
	defer cancel()
	if _, err := admin.Register(ctx, pub, false); err != nil {
		t.Fatalf("register %s: %v", endpoint, err)
	}
	return client.New(natstest.Connect(t, s), id)
}

// Start starts a server with one service replica configured by cfg and
// bootstraps the admin: the setup most tests begin with.
func Start(t testing.TB, cfg service.Config) (*server.Server, *client.Client) {
	t.Helper()
	s := natstest.Server(t)
	Service(t, s, cfg)
	return s, Admin(t, s)
}
