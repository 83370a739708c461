package client

import (
	"context"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
)

// replyMux routes the replies of verified requests through one wildcard
// subscription per connection (<inbox>.<token>) instead of a subscription
// per request: subscribing and unsubscribing for every call cost the server
// and the client more than the reply's signature check did
// (docs/performance.md). Every reply to a token reaches its waiting call,
// not only the first, so a rogue responder answering first still cannot
// stop the real reply from being used.
//
// The mux belongs to the connection, not to a Client, the way nats.go
// shares one response subscription among a connection's requests: a
// program that makes a Client per operation on one connection (memberbench
// seeds each room through its owner's) adds no subscription per Client.
// The subscription lives as long as the connection: nats.go sends it again
// after a reconnect (a call in flight then ends with [ErrConnectionLost]
// and is resent, connloss.go), and when the connection closes every
// waiting call ends at once with nats.ErrConnectionClosed, as a per-call
// subscription's NextMsg would, and the mux is forgotten.
type replyMux struct {
	nc      *nats.Conn
	mu      sync.Mutex
	sub     *nats.Subscription
	prefix  string                // "<inbox>."
	gone    chan struct{}         // closed when sub ends
	waiting map[string]*replyCall // token → the call waiting for it
	next    uint64                // tokens are never reused, across subscriptions too
}

// muxes holds each connection's reply mux.
var muxes sync.Map // *nats.Conn → *replyMux

// muxOf returns nc's reply mux.
func muxOf(nc *nats.Conn) *replyMux {
	if m, ok := muxes.Load(nc); ok {
		return m.(*replyMux)
	}
	m, _ := muxes.LoadOrStore(nc, &replyMux{nc: nc})
	return m.(*replyMux)
}

// replyCall is one call's registration with the mux: the replies that came
// for its token and not yet taken (guarded by the mux's mu).
type replyCall struct {
	m       *replyMux
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
// drop them. Verification happens in the caller's goroutine, not in the
// mux's, so a flood of bad signatures to one call delays no other call.
const (
	maxQueuedReplies = nats.DefaultSubPendingMsgsLimit
	maxQueuedBytes   = nats.DefaultSubPendingBytesLimit
)

// open registers a new call.
func (m *replyMux) open() (*replyCall, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sub == nil || !m.sub.IsValid() {
		if err := m.subscribe(); err != nil {
			muxes.CompareAndDelete(m.nc, m)
			return nil, err
		}
	}
	m.next++
	c := &replyCall{m: m, token: strconv.FormatUint(m.next, 36), ready: make(chan struct{}, 1), gone: m.gone}
	c.subject = m.prefix + c.token
	m.waiting[c.token] = c
	return c, nil
}

// subscribe takes the mux's subscription on a fresh inbox. Called with mu
// held.
func (m *replyMux) subscribe() error {
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
		m.waiting = map[string]*replyCall{}
	}
	m.sub, m.prefix, m.gone = sub, prefix, gone
	return nil
}

// deliver queues msg for the call waiting for its token, if any.
func (m *replyMux) deliver(msg *nats.Msg) {
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

// nextReply returns the call's next reply, in the order they came.
func (c *replyCall) nextReply(ctx context.Context) (*nats.Msg, error) {
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

// close ends the call's registration: later replies to it are dropped.
func (c *replyCall) close() {
	c.m.mu.Lock()
	delete(c.m.waiting, c.token)
	c.m.mu.Unlock()
}
