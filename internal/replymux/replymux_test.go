package replymux_test

import (
	"context"
	"errors"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/internal/replymux"
)

// TestCallsGetTheirOwnReplies: every reply sent to a call's subject
// reaches that call, in the order sent, and no other; after Close a
// call's replies are dropped; all of it through one subscription of the
// connection, whoever opens calls on it.
func TestCallsGetTheirOwnReplies(t *testing.T) {
	s := natstest.Server(t)
	nc, pub := natstest.Connect(t, s), natstest.Connect(t, s)
	calls := open(t, nc, 2)
	a, b := calls[0], calls[1]
	if err := nc.Flush(); err != nil { // the subscription is at the server before pub's replies
		t.Fatal(err)
	}
	if a.Subject() == b.Subject() {
		t.Fatalf("two calls share the subject %s", a.Subject())
	}
	for i := range 3 {
		if err := pub.Publish(a.Subject(), []byte("a"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Publish(b.Subject(), []byte("b0")); err != nil {
		t.Fatal(err)
	}
	ctx := natstest.Ctx(t, 1)
	for _, want := range []string{"a0", "a1", "a2"} {
		if m, err := a.Next(ctx); err != nil || string(m.Data) != want {
			t.Fatalf("call a: %v, %v; want %s", m, err, want)
		}
	}
	if m, err := b.Next(ctx); err != nil || string(m.Data) != "b0" {
		t.Fatalf("call b: %v, %v; want b0", m, err)
	}
	b.Close()
	if err := pub.Publish(b.Subject(), []byte("late")); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(a.Subject(), []byte("a3")); err != nil {
		t.Fatal(err)
	}
	if m, err := a.Next(ctx); err != nil || string(m.Data) != "a3" { // after b's late reply, sent first
		t.Fatalf("call a after b closed: %v, %v", m, err)
	}
	short, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := a.Next(short); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next with an ended context: %v", err)
	}
	if n := nc.NumSubscriptions(); n != 1 {
		t.Fatalf("%d subscriptions for two calls, want 1", n)
	}
}

// TestCallEndsWhenConnectionCloses: a call waiting for a reply ends with
// nats.ErrConnectionClosed when its connection closes, and the mux is
// forgotten with it.
func TestCallEndsWhenConnectionCloses(t *testing.T) {
	nc := natstest.Connect(t, natstest.Server(t))
	m := replymux.Of(nc)
	c := open(t, nc, 1)[0]
	done := make(chan error, 1)
	go func() {
		_, err := c.Next(natstest.Ctx(t, 1))
		done <- err
	}()
	nc.Close()
	if err := <-done; !errors.Is(err, nats.ErrConnectionClosed) {
		t.Fatalf("Next after the connection closed: %v", err)
	}
	natstest.Eventually(t, 1, "the closed connection's mux is forgotten", func() error {
		if replymux.Of(nc) == m {
			return errors.New("still the old mux")
		}
		return nil
	})
}

// open opens n calls on nc's mux.
func open(t *testing.T, nc *nats.Conn, n int) []*replymux.Call {
	t.Helper()
	calls := make([]*replymux.Call, n)
	for i := range calls {
		c, err := replymux.Of(nc).Open()
		if err != nil {
			t.Fatal(err)
		}
		calls[i] = c
	}
	return calls
}
