package client

import (
	"context"
	"crypto/rand"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
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
		ch.batch = newBatcher(min(max, channelFrameMax), linger)
	}
}

// channelInFlight is how many frames a batching channel seals and
// publishes at a time while Publish fills the next one: sealing (AEAD and
// SHA-256 over some 256 KiB) and nats.go's write then overlap with the
// caller's queueing and with each other, instead of holding Publish up
// once a frame (docs/performance.md). Each costs a frame's buffers.
const channelInFlight = 2

// batcher is the frame being filled. Full frames are handed to a
// goroutine each, which seals and publishes the frame and gives its
// buffers back; frames are published in the order they were filled (each
// waits for its predecessor's publish), so they leave in the order their
// messages were queued.
type batcher struct {
	max    int
	linger time.Duration

	mu   sync.Mutex
	n    int           // messages queued
	cur  *frameBufs    // the frame being filled
	rnd  []byte        // random bytes for the next ids, drawn a frame's worth at a time
	gen  uint64        // frames sent: a linger timer flushes only its own frame
	last chan struct{} // the newest frame in flight: closed once published; nil before the first
	free chan *frameBufs

	errMu sync.Mutex
	err   error // first failure not yet reported
}

// frameBufs are one frame's buffers: owned by the batcher while it is
// filled, by its goroutine while it is sealed and published, then back
// in free. nats.go copies the wire bytes before PublishMsg returns, so a
// set is free again as soon as its frame is published.
type frameBufs struct {
	ids   []byte // the messages' ids, n×24
	plain []byte // their frame entries
	wire  []byte // the sealed frame
}

func newBatcher(max int, linger time.Duration) *batcher {
	b := &batcher{max: max, linger: linger, cur: &frameBufs{}, free: make(chan *frameBufs, channelInFlight)}
	for range channelInFlight {
		b.free <- &frameBufs{}
	}
	return b
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
	if b.n > 0 && frameSize(ch.room, ch.c.id.Endpoint, b.n+1, len(b.cur.plain)+channelEntryLen+len(data)) > limit {
		b.flushLocked(ch)
	}
	b.cur.ids = append(b.cur.ids, id[:]...)
	b.cur.plain = appendEntry(b.cur.plain, data)
	b.n++
	switch {
	case b.n >= b.max:
		b.flushLocked(ch)
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
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.gen == gen {
		b.flushLocked(ch)
	}
}

// flush sends the frame being filled, waits until every frame handed off
// so far is published and reports the first failure.
func (b *batcher) flush(ctx context.Context, ch *Channel) error {
	b.mu.Lock()
	b.flushLocked(ch)
	last := b.last
	b.mu.Unlock()
	if last != nil {
		select {
		case <-last:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return b.report()
}

// flushLocked hands the queued messages to a goroutine that seals and
// publishes them (one as a message, more as a frame) and takes a free
// set of buffers for the next frame, waiting for one while channelInFlight
// frames are in flight: Publish is held up as it was when it sealed and
// wrote each frame itself, so memory stays bounded.
func (b *batcher) flushLocked(ch *Channel) {
	if b.n == 0 {
		return
	}
	f, n, prev, done := b.cur, b.n, b.last, make(chan struct{})
	b.last = done
	b.n = 0
	b.gen++
	go b.send(ch, f, n, prev, done)
	b.cur = <-b.free
}

// send seals frame f of n messages and publishes it once its predecessor
// prev is published (nil: none), then frees f and closes done. Its
// failure is kept for report. It runs with the client's timeout: the
// Publish call that filled the frame may have returned long since.
func (b *batcher) send(ch *Channel, f *frameBufs, n int, prev <-chan struct{}, done chan<- struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), ch.c.timeout)
	defer cancel()
	m := &channelMsg{kind: channelKindMessage}
	copy(m.nonce[:], f.ids)
	plaintext := f.plain
	if n == 1 {
		plaintext = f.plain[channelEntryLen:]
	} else {
		m.ids = f.ids
	}
	wire, err := ch.seal(ctx, f.wire, m, "", plaintext)
	if prev != nil {
		<-prev
	}
	if err == nil {
		err = ch.c.nc.PublishMsg(&nats.Msg{Subject: ch.subject, Data: wire})
	}
	b.fail(err)
	f.ids, f.plain, f.wire = f.ids[:0], f.plain[:0], wire[:0]
	b.free <- f // never blocks: at most channelInFlight sets are out
	close(done)
}

// fail keeps err for report if it is the first not yet reported.
func (b *batcher) fail(err error) {
	b.errMu.Lock()
	defer b.errMu.Unlock()
	if b.err == nil {
		b.err = err
	}
}

// report returns the first failure not yet reported, once.
func (b *batcher) report() error {
	b.errMu.Lock()
	defer b.errMu.Unlock()
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
