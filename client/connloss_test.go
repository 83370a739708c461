package client_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/unibus/membership/client"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/subjects"
)

// TestResendOnReconnect loses a mutation's reply to a reconnect: the client
// resends the very same signed bytes as soon as its connection is back,
// long before its timeout, and the mutation commits once.
func TestResendOnReconnect(t *testing.T) {
	s := natstest.Server(t)
	admin := membertest.Admin(t, s)
	bob, _ := identity.New("bob")
	pub, _ := bob.Public()
	ctx := natstest.Ctx(t, 2)
	// The attempt timeout outlives the test's context: only a resend on
	// reconnect can finish in time.
	nc := natstest.Connect(t, s)
	c := client.New(nc, admin.Identity(), client.WithRetries(1), client.WithTimeout(time.Hour))

	// Nobody answers the first copy: the request is in flight when the
	// connection drops.
	watch := natstest.Connect(t, s)
	sub, err := watch.SubscribeSync(subjects.Subject(subjects.DefaultPrefix, subjects.OpIdentityRegister))
	if err != nil {
		t.Fatal(err)
	}
	// The server must know the watcher before the first copy goes out, or
	// the copy meets no responders and spends the retry budget.
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 1)
	go func() { _, err := c.Register(ctx, pub, false); errs <- err }()
	first, err := sub.NextMsgWithContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	membertest.Service(t, s, service.Config{})
	if err := nc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; err != nil {
		t.Fatalf("Register across a reconnect: %v", err)
	}
	again, err := sub.NextMsgWithContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.Data, again.Data) {
		t.Fatal("the resent request is not the same signed bytes")
	}
	if commits := batchCommits(t, s, subjects.OpIdentityRegister); commits != 1 {
		t.Fatalf("identity_register committed %d batches, want 1", commits)
	}
}
