package client

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go"
)

// ErrConnectionLost reports that the connection to NATS dropped while a
// request waited for its reply. The reply, if one was sent, went to an
// inbox subscription that the server no longer had, so waiting on would
// only run out the timeout. [Client.Call] resends at once (within its retry
// budget): a mutation is resent as the same signed bytes, which the
// service answers with its first outcome if that copy had committed (208),
// and a read is signed again. It is what a rolling restart of the NATS
// nodes costs a client: one resend, not one timeout (docs/deploy.md,
// "Upgrades").
var ErrConnectionLost = errors.New("client: connection to NATS lost while waiting for the reply")

// failOnDisconnect returns a context that also ends, with cause
// [ErrConnectionLost], when the connection starts reconnecting or is
// disconnected. stop releases the status listener.
func (c *Client) failOnDisconnect(ctx context.Context) (context.Context, func()) {
	lost := c.nc.StatusChanged(nats.RECONNECTING, nats.DISCONNECTED)
	lctx, cancel := context.WithCancelCause(ctx)
	go func() {
		select {
		case _, ok := <-lost:
			if ok {
				cancel(ErrConnectionLost)
			}
		case <-lctx.Done():
		}
	}()
	return lctx, func() {
		c.nc.RemoveStatusListener(lost)
		cancel(nil)
	}
}
