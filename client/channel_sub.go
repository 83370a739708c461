package client

import (
	"context"
	"iter"
	"sync"

	"github.com/nats-io/nats.go"
)

// ChannelSubscription receives a channel's messages, from a handler
// ([Channel.Subscribe]) or one at a time ([Channel.SubscribeSync]). Only
// messages that verified and opened reach the caller; the others are
// counted by [Channel.Refused] and told to [WithRefusals].
type ChannelSubscription struct {
	ch      *Channel
	seen    *replayWindow
	sub     *nats.Subscription
	stop    func() bool
	pending []*Message // the rest of a frame Next is delivering

	stopWorkers func() // WithVerifiers' pipeline, or nil
	once        sync.Once
}

// Subscribe calls handler, one message at a time, for every message on the
// room's subject that verifies and opens (a frame's in order), until ctx
// ends or Unsubscribe.
// A request's handler answers it with [Message.Respond].
func (ch *Channel) Subscribe(ctx context.Context, handler func(*Message)) (*ChannelSubscription, error) {
	seen := ch.newReplayWindow()
	callback := func(raw *nats.Msg) {
		ms, err := ch.open(ctx, seen, raw, channelKindMessage, nil)
		if err != nil {
			ch.refuse(raw, err)
			return
		}
		for _, m := range ms {
			handler(m)
		}
	}
	var stopWorkers func()
	if ch.verifiers > 1 {
		callback, stopWorkers = ch.parallelHandler(ctx, seen, handler)
	}
	sub, err := ch.c.nc.Subscribe(ch.subject, callback)
	if err != nil {
		if stopWorkers != nil {
			stopWorkers()
		}
		return nil, err
	}
	return ch.subscription(ctx, sub, seen, stopWorkers)
}

// SubscribeSync subscribes to the room's subject for [ChannelSubscription.Next]
// until ctx ends or Unsubscribe.
func (ch *Channel) SubscribeSync(ctx context.Context) (*ChannelSubscription, error) {
	sub, err := ch.c.nc.SubscribeSync(ch.subject)
	if err != nil {
		return nil, err
	}
	return ch.subscription(ctx, sub, ch.newReplayWindow(), nil)
}

// subscription makes sure the server has sub before returning it, so a
// message published after Subscribe returns is received.
func (ch *Channel) subscription(ctx context.Context, sub *nats.Subscription, seen *replayWindow, stopWorkers func()) (*ChannelSubscription, error) {
	s := &ChannelSubscription{ch: ch, seen: seen, sub: sub, stopWorkers: stopWorkers}
	fctx, cancel := context.WithTimeout(ctx, ch.c.timeout) // FlushWithContext needs a deadline
	defer cancel()
	if err := ch.c.nc.FlushWithContext(fctx); err != nil {
		s.end()
		return nil, err
	}
	s.stop = context.AfterFunc(ctx, s.end)
	return s, nil
}

// Next waits for the next message that verifies and opens. A
// ChannelSubscription's Next is for one goroutine at a time.
func (s *ChannelSubscription) Next(ctx context.Context) (*Message, error) {
	for len(s.pending) == 0 {
		raw, err := s.sub.NextMsgWithContext(ctx)
		if err != nil {
			return nil, err
		}
		if s.pending, err = s.ch.open(ctx, s.seen, raw, channelKindMessage, nil); err != nil {
			s.ch.refuse(raw, err)
		}
	}
	m := s.pending[0]
	s.pending = s.pending[1:]
	return m, nil
}

// Messages iterates over Next until ctx ends or the subscription stops;
// the error that ended it is the last value.
func (s *ChannelSubscription) Messages(ctx context.Context) iter.Seq2[*Message, error] {
	return func(yield func(*Message, error) bool) {
		for {
			m, err := s.Next(ctx)
			if !yield(m, err) || err != nil {
				return
			}
		}
	}
}

// SetPendingLimits sets how many NATS messages and bytes may wait for the
// handler or Next, the one in the handler included, before NATS drops the
// subscription's messages as a slow consumer (nats.Subscription.SetPendingLimits; nats.go's defaults are
// 65,536 messages and 64 MiB, -1 is no limit). A frame is one NATS message
// of all its messages' bytes. A dropped frame is lost whole; the connection's
// error handler is told (nats.ErrSlowConsumer).
func (s *ChannelSubscription) SetPendingLimits(msgs, bytes int) error {
	return s.sub.SetPendingLimits(msgs, bytes)
}

// Unsubscribe stops the subscription.
func (s *ChannelSubscription) Unsubscribe() error {
	s.stop()
	err := s.sub.Unsubscribe()
	s.end()
	return err
}

// end unsubscribes and stops the verifiers, once, on Unsubscribe or when
// the subscription's context ends.
func (s *ChannelSubscription) end() {
	s.once.Do(func() {
		_ = s.sub.Unsubscribe()
		if s.stopWorkers != nil {
			s.stopWorkers()
		}
	})
}
