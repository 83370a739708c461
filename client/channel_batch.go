package client

import (
	"context"
	"crypto/rand"
	"sync"
	"time"
)

// WithBatching makes [Channel.Publish] pack up to max messages into one
// sealed, signed frame (docs/protocol.md §19.6), so that one Ed25519
// signature and one verification serve the whole frame. A frame is sent
// when it holds max messages, when the next message would take it past
// the server's max_payload, linger after its first message, or at
// [Channel.Flush], [Channel.Close] and [Channel.Request]. A frame of one
// message is sent as an ordinary message.
//
// Publish then returns as soon as data is queued (it is copied), with the
// message's id: the frame's error comes later, from the next Publish,
// Flush or Close, which return the first failure not yet reported; the
// messages of a failed frame are not retried. Off by default (max ≤ 1):
// batching changes Publish from "sent, or here is why not" to this
// deferred report, and delays a lone message by up to linger, so a caller
// opts in where throughput matters more (a linger of about a millisecond
// is far below NATS round trips and fills frames at high rates).
func WithBatching(max int, linger time.Duration) ChannelOption {
	return func(ch *Channel) {
		if max <= 1 {
			ch.batch = nil
			return
		}
		ch.batch = &batcher{max: min(max, channelFrameMax), linger: linger}
	}
}

// batcher is the frame being filled. Frames are sealed and published under
// mu, so they leave in the order their messages were queued.
type batcher struct {
	max    int
	linger time.Duration

	mu    sync.Mutex
	n     int    // messages queued
	ids   []byte // their ids, n×24
	plain []byte // their frame entries
	wire  []byte // the last frame's bytes, reused
	rnd   []byte // random bytes for the next ids, drawn a frame's worth at a time
	gen   uint64 // frames sent: a linger timer flushes only its own frame
	err   error  // first failure not yet reported
}

// add queues data for the next frame.
func (b *batcher) add(ctx context.Context, ch *Channel, data []byte) (MessageID, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	id, err := b.newID()
	if err != nil {
		return MessageID{}, err
	}
	limit := int(ch.c.nc.MaxPayload())
	if b.n > 0 && frameSize(ch.room, ch.c.id.Endpoint, b.n+1, len(b.plain)+channelEntryLen+len(data)) > limit {
		b.flushLocked(ctx, ch)
	}
	b.ids = append(b.ids, id[:]...)
	b.plain = appendEntry(b.plain, data)
	b.n++
	switch {
	case b.n >= b.max:
		b.flushLocked(ctx, ch)
	case b.n == 1:
		gen := b.gen
		time.AfterFunc(b.linger, func() { b.lingered(ch, gen) })
	}
	return id, b.report()
}

// newID draws a random message id from rnd, refilled from crypto/rand a
// frame's worth at a time: one call instead of one per message, the same
// randomness.
func (b *batcher) newID() (MessageID, error) {
	var id MessageID
	if len(b.rnd) < len(id) {
		b.rnd = make([]byte, b.max*len(id))
		if _, err := rand.Read(b.rnd); err != nil {
			return id, err
		}
	}
	copy(id[:], b.rnd)
	clear(b.rnd[:len(id)])
	b.rnd = b.rnd[len(id):]
	return id, nil
}

// lingered sends frame gen if it is still being filled.
func (b *batcher) lingered(ch *Channel, gen uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), ch.c.timeout)
	defer cancel()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.gen == gen {
		b.flushLocked(ctx, ch)
	}
}

// flush sends the frame being filled and reports the first failure.
func (b *batcher) flush(ctx context.Context, ch *Channel) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flushLocked(ctx, ch)
	return b.report()
}

// flushLocked seals and publishes the queued messages: one as a message,
// more as a frame. Its failure is kept for report.
func (b *batcher) flushLocked(ctx context.Context, ch *Channel) {
	if b.n == 0 {
		return
	}
	m := &channelMsg{kind: channelKindMessage}
	copy(m.nonce[:], b.ids)
	plaintext := b.plain
	if b.n == 1 {
		plaintext = b.plain[channelEntryLen:]
	} else {
		m.ids = b.ids
	}
	var err error
	if b.wire, err = ch.send(ctx, b.wire, ch.subject, m, "", plaintext); err != nil && b.err == nil {
		b.err = err
	}
	b.n, b.ids, b.plain = 0, b.ids[:0], b.plain[:0]
	b.gen++
}

// report returns the first failure not yet reported, once.
func (b *batcher) report() error {
	err := b.err
	b.err = nil
	return err
}

// Flush sends the messages [WithBatching] queued and returns the first
// failure of a frame not yet reported. Without batching it does nothing.
func (ch *Channel) Flush(ctx context.Context) error {
	if ch.batch == nil {
		return nil
	}
	return ch.batch.flush(ctx, ch)
}

// Close flushes the channel's queued messages; later Publish calls fail
// with [ErrChannelClosed]. Subscriptions are not affected.
func (ch *Channel) Close(ctx context.Context) error {
	ch.closed.Store(true)
	return ch.Flush(ctx)
}
