package client_test

import (
	"sync"
	"testing"

	"github.com/unibus/membership/client"
	"github.com/unibus/membership/e2e/natstest"
	"github.com/unibus/membership/service"
)

// TestVerifiedCallsShareOneSubscription: concurrent verified calls each get
// their own reply, through one subscription of the client rather than one
// per call (replymux.go), and none is left behind.
func TestVerifiedCallsShareOneSubscription(t *testing.T) {
	s := natstest.Server(t)
	natstest.Service(t, s, service.Config{})
	admin := natstest.Admin(t, s)
	nc := natstest.Connect(t, s)
	c := client.New(nc, admin.Identity())
	ctx := ctxT(t)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if id, err := c.Whoami(ctx); err != nil || id.Endpoint != "admin" {
				t.Errorf("whoami: %v, %v", id, err)
			}
		})
	}
	wg.Wait()
	if n := nc.NumSubscriptions(); n != 1 {
		t.Fatalf("%d subscriptions after 20 verified calls, want 1", n)
	}
}
