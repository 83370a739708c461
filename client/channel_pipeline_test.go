package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/internal/natstest"
)

// pipelineChannel is a channel of room "pipe" on nc for id, with the room's
// state and epoch 1's key already at hand (no service: the batcher's
// pipeline and the subscriber's checks are what is tested), and id's
// signing key as the only member's.
func pipelineChannel(t *testing.T, nc *nats.Conn, id *identity.Identity, roomKey []byte, opts ...ChannelOption) *Channel {
	t.Helper()
	pub, err := id.Sign.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := nkeys.Decode(nkeys.PrefixByteUser, []byte(pub))
	if err != nil {
		t.Fatal(err)
	}
	aead, err := channelAEAD(roomKey)
	if err != nil {
		t.Fatal(err)
	}
	ch := &Channel{c: New(nc, id), room: "pipe", subject: "chat.pipe", window: DefaultReplayWindow,
		replayMemory: DefaultReplayMemory, refreshAfter: time.Hour}
	for _, o := range opts {
		o(ch)
	}
	ch.state.Store(&channelState{epoch: 1, read: time.Now(),
		members: map[string]channelMember{id.Endpoint: {key: ed25519.PublicKey(raw), since: 1}}})
	ch.keys.Store(uint64(1), &epochKey{aead: aead})
	return ch
}

// pipelinePair is a publishing channel with opts and a receiving one, each
// on its own connection to a new server, for one member.
func pipelinePair(t *testing.T, opts ...ChannelOption) (pub, sub *Channel) {
	t.Helper()
	s := natstest.Server(t)
	id, err := identity.New("alice")
	if err != nil {
		t.Fatal(err)
	}
	roomKey := make([]byte, 32)
	_, _ = rand.Read(roomKey)
	return pipelineChannel(t, natstest.Connect(t, s), id, roomKey, opts...), pipelineChannel(t, natstest.Connect(t, s), id, roomKey)
}

// TestChannelBatchPipeline: with frames sealed and published by goroutines
// of their own (channelInFlight at a time) while Publish fills the next,
// every message arrives once, in the order it was published, with the id
// Publish returned and its own bytes, and none is refused. Messages of
// different lengths make each frame's buffers differ from the last, so a
// set of buffers handed out twice — filled while another frame still
// sealed from it — shows as a refused or wrong frame here, and under -race
// as a race between Publish and the sealing goroutine.
func TestChannelBatchPipeline(t *testing.T) {
	ctx := natstest.Ctx(t, 4)
	pch, sch := pipelinePair(t, WithBatching(7, time.Hour))
	const n = 5000
	got := make(chan *Message, n+1)
	sub, err := sch.Subscribe(ctx, func(m *Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	body := func(i int) []byte { return bytes.Repeat([]byte(fmt.Sprintf("%d.", i)), 1+i%37) }
	ids := make([]MessageID, n)
	for i := range n {
		if ids[i], err = pch.Publish(ctx, body(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := pch.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		select {
		case m := <-got:
			if m.ID != ids[i] || !bytes.Equal(m.Data, body(i)) {
				t.Fatalf("message %d: id %s, %.20q…; want id %s, %.20q…", i, m.ID, m.Data, ids[i], body(i))
			}
		case <-ctx.Done():
			t.Fatalf("%d of %d messages arrived (%d refused)", i, n, sch.Refused())
		}
	}
	if sch.Refused() != 0 {
		t.Fatalf("%d refused", sch.Refused())
	}
	checkFrameBufs(t, pch.batch)
}

// checkFrameBufs checks, once every frame is published, that the batcher
// owns exactly channelInFlight+1 sets of buffers, the one being filled and
// channelInFlight free, no two sharing memory.
func checkFrameBufs(t *testing.T, b *batcher) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	sets := []*frameBufs{b.cur}
	for len(b.free) > 0 {
		sets = append(sets, <-b.free)
	}
	defer func() {
		for _, f := range sets[1:] {
			b.free <- f
		}
	}()
	if len(sets) != channelInFlight+1 {
		t.Fatalf("%d sets of frame buffers after Flush, want %d", len(sets), channelInFlight+1)
	}
	seen := map[*byte]bool{}
	for _, f := range sets {
		for _, buf := range [][]byte{f.ids, f.plain, f.wire} {
			if cap(buf) == 0 {
				continue
			}
			p := &buf[:1][0]
			if seen[p] {
				t.Fatal("two sets of frame buffers share memory")
			}
			seen[p] = true
		}
	}
}

// TestChannelBatchPipelineFailure: a frame its goroutine cannot seal is
// reported by a later Publish or Flush, as when Publish sealed frames
// itself, and Flush returns when its context ends.
func TestChannelBatchPipelineFailure(t *testing.T) {
	ctx := natstest.Ctx(t, 4)
	pch, _ := pipelinePair(t, WithBatching(4, time.Hour))
	pch.keys.Store(uint64(1), &epochKey{err: ErrChannelUnknown}) // no frame can be sealed
	var reported []error
	for i := range 10 {
		if _, err := pch.Publish(ctx, []byte{byte(i)}); err != nil {
			reported = append(reported, err)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := pch.Flush(cancelled); err != nil && !errors.Is(err, context.Canceled) {
		reported = append(reported, err)
	}
	if err := pch.Flush(ctx); err != nil {
		reported = append(reported, err)
	}
	if len(reported) == 0 {
		t.Fatal("frames that could not be sealed were never reported")
	}
	for _, err := range reported {
		if !errors.Is(err, ErrChannelUnknown) {
			t.Fatalf("reported %v, want the sealing failure", err)
		}
	}
	if err := pch.Flush(ctx); err != nil {
		t.Fatalf("a failure reported twice: %v", err)
	}
}
