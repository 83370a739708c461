package e2e

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/unibus/membership/callout"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/e2e/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/subjects"
)

// busWait bounds each wait of the bus tests for something that happens at
// once when it works (a kick, a refusal, a delivery).
const busWait = 10 * time.Second

// busNode is one nats-server whose connections are authorized by a callout
// replica in this process, as membershipd --bus runs it embedded.
type busNode struct {
	s       *server.Server
	keys    *callout.EmbeddedKeys
	callout *callout.Callout
	admin   *client.Client
}

// startBusNode starts the server, the service with its revoker and the
// callout in mode, and bootstraps an admin that connects with its key.
func startBusNode(t *testing.T, mode callout.Mode) *busNode {
	t.Helper()
	opts := &server.Options{}
	keys, err := callout.ConfigureEmbedded(opts)
	if err != nil {
		t.Fatal(err)
	}
	b := &busNode{s: natstest.ServerWith(t, opts), keys: keys}
	svcNC := natstest.Connect(t, b.s, nkeyOpt(keys.Service))
	sysNC := natstest.Connect(t, b.s, nkeyOpt(keys.System))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	co, err := callout.New(callout.Config{Mode: mode, Issuer: keys.Issuer, Account: callout.EmbeddedAccount,
		Prefix: subjects.DefaultPrefix, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	rev := co.NewRevoker(ctx, sysNC)
	st := natstest.Store(t, svcNC)
	svc, err := service.Start(svcNC, st, service.Config{Revoke: rev.Revoke, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	if err := co.Serve(svcNC, svc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = co.Stop() })
	b.callout = co

	id, _ := client.NewIdentity("admin")
	pub, _ := id.Public()
	bctx, bcancel := context.WithTimeout(context.Background(), busWait)
	defer bcancel()
	if _, err := service.Bootstrap(bctx, st, pub); err != nil {
		t.Fatal(err)
	}
	b.admin = client.New(b.connect(t, id), id)
	return b
}

func nkeyOpt(kp interface {
	PublicKey() (string, error)
	Sign([]byte) ([]byte, error)
}) nats.Option {
	pub, _ := kp.PublicKey()
	return nats.Nkey(pub, kp.Sign)
}

// connect connects as id with its key, failing the test if refused.
func (b *busNode) connect(t *testing.T, id *client.Identity, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := b.dial(id, opts...)
	if err != nil {
		t.Fatalf("%s connect: %v", id.Endpoint, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func (b *busNode) dial(id *client.Identity, opts ...nats.Option) (*nats.Conn, error) {
	return nats.Connect(b.s.ClientURL(), append(id.BusOptions(), opts...)...)
}

// register makes a registered identity for each name.
func (b *busNode) register(t *testing.T, names ...string) map[string]*client.Identity {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), busWait)
	defer cancel()
	return registerNew(ctx, t, b.admin, names...)
}

// member returns a client of id on its own bus connection.
func (b *busNode) member(t *testing.T, id *client.Identity) *client.Client {
	return client.New(b.connect(t, id), id)
}

// errCollector gathers a connection's asynchronous errors.
func errCollector() (nats.Option, <-chan error) {
	errs := make(chan error, 16)
	return nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errs <- err:
		default:
		}
	}), errs
}

// TestBusRefusesUnknownAndDisabled: only an active identity connects, and
// only with the key it signs with; a disable kicks its connections and
// they cannot come back.
func TestBusRefusesUnknownAndDisabled(t *testing.T) {
	b := startBusNode(t, callout.Enforce)
	ids := b.register(t, "alice")
	stranger, _ := client.NewIdentity("alice") // same id, other key
	if _, err := b.dial(stranger); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("unknown key: %v, want an authorization violation", err)
	}
	if _, err := nats.Connect(b.s.ClientURL()); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("no credentials: %v, want an authorization violation", err)
	}
	kicked := make(chan struct{}, 1)
	b.connect(t, ids["alice"], nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { kicked <- struct{}{} }))
	ctx, cancel := context.WithTimeout(context.Background(), busWait)
	defer cancel()
	if _, err := b.admin.Disable(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	// Kicked at once; every reconnection is refused.
	wait(t, kicked, "alice kicked")
	if _, err := b.dial(ids["alice"]); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("disabled identity: %v, want an authorization violation", err)
	}
	if n := b.callout.Stats(); n.Kicked < 1 || n.Refused < 3 {
		t.Fatalf("stats %+v: want a kick and three refusals", n)
	}
}

// wait waits for a value on ch, at most busWait.
func wait[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(busWait):
		t.Fatalf("%s: not within %s", what, busWait)
		panic("unreachable")
	}
}
