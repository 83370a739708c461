package client_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/membership/client"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/subjects"
)

// TestVerifiedCallsShareOneSubscription: concurrent verified calls each get
// their own reply, through one subscription of the connection rather than
// one per call (internal/replymux), and none is left behind — however many
// Clients share the connection.
func TestVerifiedCallsShareOneSubscription(t *testing.T) {
	s := natstest.Server(t)
	membertest.Service(t, s, service.Config{})
	admin := membertest.Admin(t, s)
	nc := natstest.Connect(t, s)
	for range 3 {
		whoamiAll(t, client.New(nc, admin.Identity()), 20)
	}
	if n := nc.NumSubscriptions(); n != 1 {
		t.Fatalf("%d subscriptions after 60 verified calls of 3 clients, want 1", n)
	}
}

// whoamiAll makes n concurrent verified calls, each of which must get its
// own answer.
func whoamiAll(t *testing.T, c *client.Client, n int) {
	t.Helper()
	ctx := natstest.Ctx(t, 2)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if id, err := c.Whoami(ctx); err != nil || id.Endpoint != "admin" {
				t.Errorf("whoami: %v, %v", id, err)
			}
		})
	}
	wg.Wait()
}

// TestReplyMuxAcrossReconnect: after a reconnect — a new connection, on
// which the server knows none of the old one's subscriptions — the client's
// one reply subscription is in place again (nats.go sends it again before
// anything buffered), and verified calls get their replies through it.
func TestReplyMuxAcrossReconnect(t *testing.T) {
	s := natstest.Server(t)
	membertest.Service(t, s, service.Config{})
	admin := membertest.Admin(t, s)
	reconnected := make(chan struct{}, 1)
	nc := natstest.Connect(t, s, nats.ReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} }))
	c := client.New(nc, admin.Identity(), client.WithRetries(0))
	whoamiAll(t, c, 5)
	for range 2 {
		if err := nc.ForceReconnect(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-reconnected:
		case <-natstest.Ctx(t, 2).Done():
			t.Fatal("no reconnect")
		}
		whoamiAll(t, c, 5) // no retries: a lost reply would fail the call
	}
	if n := nc.NumSubscriptions(); n != 1 {
		t.Fatalf("%d subscriptions after reconnects, want 1", n)
	}
}

// TestVerifiedCallEndsWhenConnectionCloses: a verified call waiting for its
// reply ends with nats.ErrConnectionClosed as soon as its connection is
// closed, not when its attempt times out (here an hour): a closed
// connection ends the client's reply subscription, and with it every call
// waiting on it.
func TestVerifiedCallEndsWhenConnectionCloses(t *testing.T) {
	s := natstest.Server(t)
	admin := membertest.Admin(t, s)
	// A silent listener on the operation: the request meets a responder
	// (no 503) that never answers.
	watch := natstest.Connect(t, s)
	sub, err := watch.SubscribeSync(subjects.Subject(subjects.DefaultPrefix, subjects.OpWhoami))
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	nc := natstest.Connect(t, s)
	c := client.New(nc, admin.Identity(), client.WithTimeout(time.Hour), client.WithRetries(0))
	ctx := natstest.Ctx(t, 2)
	errs := make(chan error, 1)
	go func() { _, err := c.Whoami(ctx); errs <- err }()
	if _, err := sub.NextMsgWithContext(ctx); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrConnectionClosed) {
			t.Fatalf("call on a closed connection: %v, want nats.ErrConnectionClosed", err)
		}
	case <-ctx.Done():
		t.Fatal("the call still waits after its connection closed")
	}
}
