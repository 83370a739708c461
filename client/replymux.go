package client

import (
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
)

// replyMux routes the replies of verified requests through one wildcard
// subscription per client (<inbox>.<token>) instead of a subscription per
// request: subscribing and unsubscribing for every call cost the server and
// the client more than the reply's signature check did (docs/performance.md).
// Every reply to a token reaches its waiting call, not only the first, so a
// rogue responder answering first still cannot stop the real reply from
// being used.
type replyMux struct {
	mu      sync.Mutex
	sub     *nats.Subscription
	prefix  string                    // "<inbox>."
	waiting map[string]chan *nats.Msg // token → the call waiting for it
	next    uint64
}

// muxBuffer bounds the replies held for one call; beyond it a call is being
// flooded and further replies are dropped, as a subscription's pending
// limit would drop them.
const muxBuffer = 256

// open registers a new call on nc and returns its reply subject, its
// channel and the function that ends the registration.
func (m *replyMux) open(nc *nats.Conn) (string, <-chan *nats.Msg, func(), error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sub == nil || !m.sub.IsValid() {
		m.prefix = nc.NewInbox() + "."
		m.waiting = map[string]chan *nats.Msg{}
		sub, err := nc.Subscribe(m.prefix+"*", m.deliver)
		if err != nil {
			return "", nil, nil, err
		}
		sub.SetPendingLimits(-1, -1) // each call bounds its own queue (muxBuffer)
		m.sub = sub
	}
	m.next++
	token := strconv.FormatUint(m.next, 36)
	ch := make(chan *nats.Msg, muxBuffer)
	m.waiting[token] = ch
	done := func() {
		m.mu.Lock()
		delete(m.waiting, token)
		m.mu.Unlock()
	}
	return m.prefix + token, ch, done, nil
}

// deliver hands msg to the call waiting for its token, if any.
func (m *replyMux) deliver(msg *nats.Msg) {
	m.mu.Lock()
	ch := m.waiting[strings.TrimPrefix(msg.Subject, m.prefix)]
	m.mu.Unlock()
	if ch == nil {
		return // a late reply to a call that has ended
	}
	select {
	case ch <- msg:
	default: // flooded: dropped (muxBuffer)
	}
}
