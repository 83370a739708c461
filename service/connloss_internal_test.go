package service

import (
	"context"
	"errors"
	"testing"

	"github.com/unibus/membership/internal/natstest"
)

// TestConnEpoch ends the requests in flight when the replica's connection
// drops, and gives the next ones a live context.
func TestConnEpoch(t *testing.T) {
	nc := natstest.Connect(t, natstest.Server(t))
	e := watchConn(nc)
	defer e.stop(nc)
	inFlight := e.current()
	if inFlight.Err() != nil {
		t.Fatal("epoch ended before any disconnect")
	}
	if err := nc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	ctx := natstest.Ctx(t, 2)
	select {
	case <-inFlight.Done():
	case <-ctx.Done():
		t.Fatal("a reconnect did not end the requests in flight")
	}
	if cause := context.Cause(inFlight); !errors.Is(cause, errConnectionLost) {
		t.Fatalf("cause = %v, want errConnectionLost", cause)
	}
	if e.current().Err() != nil {
		t.Fatal("the next epoch is already over")
	}
}
