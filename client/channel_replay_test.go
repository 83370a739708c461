package client

import (
	"errors"
	"testing"
	"time"
)

// TestChannelReplayWindow: new ids are claimed, a seen one refuses its
// whole frame without recording the frame's others, an id twice in one
// frame refuses it, and ids are forgotten once keep has passed.
func TestChannelReplayWindow(t *testing.T) {
	ch := &Channel{window: time.Minute, replayMemory: DefaultReplayMemory}
	w := ch.newReplayWindow()
	id := func(b byte) MessageID { return MessageID{b} }
	t0 := time.Now()
	ts := t0.UnixMilli()
	claim := func(now time.Time, ids ...MessageID) error { return w.claim(ids, ts, now) }
	if err := claim(t0, id(1), id(2)); err != nil {
		t.Fatalf("new ids refused: %v", err)
	}
	if err := claim(t0, id(3), id(2)); !errors.Is(err, ErrChannelReplay) {
		t.Fatalf("a seen id: %v, want replay", err)
	}
	if err := claim(t0, id(3)); err != nil {
		t.Fatalf("an id of a refused frame was recorded: %v", err)
	}
	if err := claim(t0, id(4), id(5), id(4)); !errors.Is(err, ErrChannelReplay) {
		t.Fatalf("an id twice in one frame: %v, want replay", err)
	}
	if err := claim(t0, id(4), id(5)); err != nil {
		t.Fatalf("ids of a refused frame were recorded: %v", err)
	}
	if err := claim(t0.Add(2*time.Minute), id(1)); !errors.Is(err, ErrChannelReplay) {
		t.Fatalf("an id forgotten before keep passed: %v", err)
	}
	if err := claim(t0.Add(2*time.Minute+time.Millisecond), id(1)); err != nil {
		t.Fatalf("an id remembered after keep passed: %v", err)
	}
	if len(w.seen) != 1 || w.held() != 1 {
		t.Fatalf("window holds %d ids (queues %d) after expiry, want 1", len(w.seen), w.held())
	}
}

// TestChannelReplayMemory: the window never holds more than its bound,
// however fast ids arrive; the oldest are forgotten first, and then a
// replay of a forgotten id (or any message stamped no later) is refused as
// stale, while newer messages are still accepted.
func TestChannelReplayMemory(t *testing.T) {
	ch := &Channel{window: time.Minute}
	WithReplayMemory(1)(ch)
	if ch.replayMemory != channelFrameMax {
		t.Fatalf("a bound below one frame: %d, want %d", ch.replayMemory, channelFrameMax)
	}
	w := ch.newReplayWindow()
	now := time.Now()
	frame := func(i int) []MessageID {
		ids := make([]MessageID, channelFrameMax)
		for j := range ids {
			ids[j] = MessageID{byte(i), byte(j >> 8), byte(j)}
		}
		return ids
	}
	const ts0 = 1764000000000
	for i := range 3 { // three full frames, a millisecond apart
		if err := w.claim(frame(i), ts0+int64(i), now); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if held := w.held(); len(w.seen) > channelFrameMax || held != len(w.seen) {
			t.Fatalf("frame %d: window holds %d ids (queue %d), bound %d", i, len(w.seen), held, channelFrameMax)
		}
	}
	if err := w.claim(frame(0)[:1], ts0, now); !errors.Is(err, ErrChannelStale) {
		t.Fatalf("replay of a forgotten id: %v, want stale", err)
	}
	if err := w.claim(frame(1)[:1], ts0+1, now); !errors.Is(err, ErrChannelStale) {
		t.Fatalf("replay of a forgotten id stamped at the floor: %v, want stale", err)
	}
	if err := w.claim(frame(2)[:1], ts0+2, now); !errors.Is(err, ErrChannelReplay) {
		t.Fatalf("replay of a remembered id: %v, want replay", err)
	}
	if err := w.claim([]MessageID{{9}}, ts0+3, now); err != nil {
		t.Fatalf("a new message after the floor: %v", err)
	}
}

// held counts the ids w's queues hold, -1 if claims of frames and the
// frames' ids do not pair up one to one.
func (w *replayWindow) held() int {
	n, f := 0, w.frames.head
	for _, c := range w.claims.items[w.claims.head:] {
		if !c.frame {
			n++
			continue
		}
		if f == len(w.frames.items) {
			return -1
		}
		n += len(w.frames.items[f])
		f++
	}
	if f != len(w.frames.items) {
		return -1
	}
	return n
}

// TestChannelReplayMixed: messages and frames in turn past the memory
// bound: the queues always hold exactly the ids the map does, never more
// than the bound, the oldest go first (a frame whole), and a replay of any
// forgotten one is refused as stale.
func TestChannelReplayMixed(t *testing.T) {
	ch := &Channel{window: time.Minute}
	WithReplayMemory(1)(ch) // one full frame: channelFrameMax ids
	w := ch.newReplayWindow()
	now := time.Now()
	const ts0 = 1764000000000
	var claimed [][]MessageID
	for i := range 200 {
		ids := []MessageID{{byte(i), byte(i >> 8), 0xff}}
		if i%2 == 1 {
			ids = make([]MessageID, 1000)
			for j := range ids {
				ids[j] = MessageID{byte(i), byte(i >> 8), byte(j), byte(j >> 8)}
			}
		}
		if err := w.claim(ids, ts0+int64(i), now); err != nil {
			t.Fatalf("claim %d: %v", i, err)
		}
		claimed = append(claimed, ids)
		if held := w.held(); held != len(w.seen) || held > channelFrameMax {
			t.Fatalf("claim %d: queues hold %d ids, map %d, bound %d", i, held, len(w.seen), channelFrameMax)
		}
	}
	if w.floor == 0 {
		t.Fatal("nothing was forgotten past the bound")
	}
	for i, ids := range claimed {
		err := w.claim(ids[len(ids)-1:], ts0+int64(i), now)
		if ts0+int64(i) <= w.floor && !errors.Is(err, ErrChannelStale) || ts0+int64(i) > w.floor && !errors.Is(err, ErrChannelReplay) {
			t.Fatalf("replay of claim %d (floor %d): %v", i, w.floor-ts0, err)
		}
	}
}
