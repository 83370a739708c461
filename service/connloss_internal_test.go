package service

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// TestConnEpoch ends the requests in flight when the replica's connection
// drops, and gives the next ones a live context.
func TestConnEpoch(t *testing.T) {
	// An in-process server (membertest imports this package).
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer s.Shutdown()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	e := watchConn(nc)
	defer e.stop(nc)
	inFlight := e.current()
	if inFlight.Err() != nil {
		t.Fatal("epoch ended before any disconnect")
	}
	if err := nc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
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
