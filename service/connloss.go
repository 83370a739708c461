package service

import (
	"context"
	"errors"
	"sync"

	"github.com/nats-io/nats.go"
)

// errConnectionLost ends the requests in flight when the replica's
// connection drops.
var errConnectionLost = errors.New("connection to NATS lost")

// connEpoch ends the requests in flight when the replica's connection to
// NATS drops: their store operations wait for JetStream acknowledgements
// on an inbox the server no longer holds, so without it each would wait out
// the whole request timeout (a planned restart of the replica's node then
// costs its clients seconds). Ended early, such a request answers 503
// unavailable like any store failure — the outcome is open, nothing is
// claimed that did not commit — and the reply goes out once the connection
// is back (nats.go buffers it while reconnecting); the client resends the
// same signed request, answered 208 with the first outcome if that copy
// had committed after all.
type connEpoch struct {
	mu     sync.Mutex
	ctx    context.Context
	cancel context.CancelCauseFunc
	lost   chan nats.Status
	done   chan struct{}
}

// watchConn starts an epoch on nc; stop with [connEpoch.stop].
func watchConn(nc *nats.Conn) *connEpoch {
	e := &connEpoch{lost: nc.StatusChanged(nats.RECONNECTING, nats.DISCONNECTED), done: make(chan struct{})}
	e.ctx, e.cancel = context.WithCancelCause(context.Background())
	go func() {
		defer close(e.done)
		for range e.lost {
			e.next()
		}
	}()
	return e
}

// current is the context of the connection as it is now.
func (e *connEpoch) current() context.Context {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ctx
}

// next ends the current epoch and begins another.
func (e *connEpoch) next() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cancel(errConnectionLost)
	e.ctx, e.cancel = context.WithCancelCause(context.Background())
}

// stop releases the status listener; requests still running keep their
// epoch until their own timeout.
func (e *connEpoch) stop(nc *nats.Conn) {
	nc.RemoveStatusListener(e.lost)
	<-e.done
}
