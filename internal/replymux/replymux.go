package replymux

import (
	"context"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
)

// Mux routes the replies of a connection's calls through one wildcard
// subscription (<inbox>.<token>) instead of a subscription per call:
// subscribing and unsubscribing for every call cost the server and the
// client more than the reply's own work did (docs/performance.md). Every
// reply to a token reaches its waiting call, not only the first, so a
// rogue responder answering a verified client call first still cannot
// stop the real reply from being used, and a reply of several messages
// (a multi-key direct get) arrives whole.
//
// The mux belongs to the connection, not to a caller, the way nats.go
// shares one response subscription among a connection's requests: a
// program that makes a client per operation on one connection, or a store
// and a client that share one, adds no subscription per user. The
// subscription lives as long as the connection: nats.go sends it again
// after a reconnect (a call in flight then waits for its caller's
// deadline, as a request of nats.go's own would), and when the connection
// closes every waiting call ends at once with nats.ErrConnectionClosed, as
// a per-call subscription's NextMsg would, and the mux is forgotten.
type Mux struct {
	nc      *nats.Conn
	mu      sync.Mutex
	sub     *nats.Subscription
	prefix  string           // "<inbox>."
	gone    chan struct{}    // closed when sub ends
	waiting map[string]*Call // token → the call waiting for it
	next    uint64           // tokens are never reused, across subscriptions too
}

// muxes holds each connection's reply mux.
var muxes sync.Map // *nats.Conn → *Mux

// Of returns nc's reply mux.
func Of(nc *nats.Conn) *Mux {
	if m, ok := muxes.Load(nc); ok {
		return m.(*Mux)
	}
	m, _ := muxes.LoadOrStore(nc, &Mux{nc: nc})
	return m.(*Mux)
}

// Call is one call's registration with the mux: the replies that came for
// its token and not yet taken (guarded by the mux's mu).
type Call struct {
	m       *Mux
	token   string
	subject string        // where the call's replies are sent
	ready   chan struct{} // one slot: a reply was queued
	gone    <-chan struct{}
	queued  []*nats.Msg
	bytes   int
}

// A call queues at most as many replies as a subscription of its own would
// hold pending by default; beyond that it is being flooded and further
// replies are dropped, as that subscription's slow-consumer limit would
// drop them. The caller handles its replies in its own goroutine, not in
// the mux's, so a flood of bad replies to one call delays no other call.
const (
	maxQueuedReplies = nats.DefaultSubPendingMsgsLimit
	maxQueuedBytes   = nats.DefaultSubPendingBytesLimit
)

// Open registers a new call; its replies are those sent to [Call.Subject]
// until [Call.Close].
func (m *Mux) Open() (*Call, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sub == nil || !m.sub.IsValid() {
		if err := m.subscribe(); err != nil {
			muxes.CompareAndDelete(m.nc, m)
			return nil, err
		}
	}
	m.next++
	c := &Call{m: m, token: strconv.FormatUint(m.next, 36), ready: make(chan struct{}, 1), gone: m.gone}
	c.subject = m.prefix + c.token
	m.waiting[c.token] = c
	return c, nil
}

// subscribe takes the mux's subscription on a fresh inbox. Called with mu
// held.
func (m *Mux) subscribe() error {
	prefix := m.nc.NewInbox() + "."
	sub, err := m.nc.Subscribe(prefix+"*", m.deliver)
	if err != nil {
		return err
	}
	gone := make(chan struct{})
	var once sync.Once
	end := func(string) {
		once.Do(func() {
			close(gone)
			muxes.CompareAndDelete(m.nc, m)
		})
	}
	sub.SetClosedHandler(end)
	if !sub.IsValid() { // closed before the handler was set
		end("")
	}
	// Each call bounds its own queue (maxQueuedReplies): one flooded call
	// must not make the subscription drop other calls' replies.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		end("")
	}
	if m.waiting == nil {
		m.waiting = map[string]*Call{}
	}
	m.sub, m.prefix, m.gone = sub, prefix, gone
	return nil
}

// deliver queues msg for the call waiting for its token, if any.
func (m *Mux) deliver(msg *nats.Msg) {
	token := msg.Subject[strings.LastIndexByte(msg.Subject, '.')+1:]
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.waiting[token]
	if c == nil {
		return // a late reply to a call that has ended
	}
	if len(c.queued) >= maxQueuedReplies || c.bytes+len(msg.Data) > maxQueuedBytes {
		return // flooded: dropped
	}
	c.queued = append(c.queued, msg)
	c.bytes += len(msg.Data)
	select {
	case c.ready <- struct{}{}:
	default: // already signalled
	}
}

// Subject is where the call's replies are to be sent.
func (c *Call) Subject() string { return c.subject }

// Next returns the call's next reply, in the order they came.
func (c *Call) Next(ctx context.Context) (*nats.Msg, error) {
	for {
		c.m.mu.Lock()
		if len(c.queued) > 0 {
			msg := c.queued[0]
			c.queued[0] = nil
			c.queued = c.queued[1:]
			c.bytes -= len(msg.Data)
			c.m.mu.Unlock()
			return msg, nil
		}
		c.m.mu.Unlock()
		select {
		case <-c.ready:
		case <-c.gone:
			return nil, nats.ErrConnectionClosed
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Close ends the call's registration: later replies to it are dropped.
func (c *Call) Close() {
	c.m.mu.Lock()
	delete(c.m.waiting, c.token)
	c.m.mu.Unlock()
}
