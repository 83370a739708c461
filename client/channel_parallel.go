package client

import (
	"context"

	"github.com/nats-io/nats.go"
)

// WithVerifiers makes [Channel.Subscribe] check and open up to n messages
// at a time on n goroutines, still calling the handler one message at a
// time in arrival order (default 1: checked on the subscription's own
// goroutine). Ed25519 verification dominates the cost of a message
// (docs/performance.md), so a receiver with spare cores delivers up to n
// times as many messages per second.
func WithVerifiers(n int) ChannelOption {
	return func(ch *Channel) { ch.verifiers = max(n, 1) }
}

// checked is one message on its way through the parallel pipeline.
type checked struct {
	raw  *nats.Msg
	ms   []*Message
	err  error
	done chan struct{}
}

// parallelHandler returns a subscription callback that hands each message
// to ch.verifiers workers and delivers the results in arrival order, and a
// function that stops the pipeline. The callback blocks when verifiers fall
// behind, so the backlog stays in the subscription's pending limits.
func (ch *Channel) parallelHandler(ctx context.Context, seen *replayWindow, handler func(*Message)) (nats.MsgHandler, func()) {
	n := ch.verifiers
	order := make(chan *checked, 4*n) // arrival order, for delivery
	work := make(chan *checked, 4*n)
	quit := make(chan struct{})
	for range n {
		go func() {
			for {
				select {
				case c := <-work:
					c.ms, c.err = ch.open(ctx, seen, c.raw, channelKindMessage, nil)
					close(c.done)
				case <-quit:
					return
				}
			}
		}()
	}
	go func() {
		for {
			select {
			case c := <-order:
				select {
				case <-c.done:
				case <-quit:
					return
				}
				if c.err != nil {
					ch.refuse(c.raw, c.err)
				} else {
					for _, m := range c.ms {
						handler(m)
					}
				}
			case <-quit:
				return
			}
		}
	}()
	callback := func(raw *nats.Msg) {
		c := &checked{raw: raw, done: make(chan struct{})}
		for _, q := range []chan *checked{order, work} {
			select {
			case q <- c:
			case <-quit:
				return
			}
		}
	}
	return callback, func() { close(quit) }
}
