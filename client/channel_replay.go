package client

import (
	"sync"
	"time"
)

// DefaultReplayMemory is how many message ids a subscription remembers at
// most (about 140 bytes each, map and queue: some 35 MB), see
// [WithReplayMemory].
const DefaultReplayMemory = 1 << 18

// WithReplayMemory bounds the ids each subscription remembers to catch
// replays (default [DefaultReplayMemory]; at least one full frame). Ids are
// kept for twice the replay window; at a rate above n per two windows the
// oldest are forgotten first, and every message stamped no later than a
// forgotten one is then refused as stale: a replay of a forgotten id is
// always refused, and memory stays bounded whatever members send. The cost
// falls on late messages only: at R messages a second, one that arrives
// more than about n/R seconds after a newer one was accepted is refused.
func WithReplayMemory(n int) ChannelOption {
	return func(ch *Channel) { ch.replayMemory = max(n, channelFrameMax) }
}

// replayWindow remembers the ids of accepted messages for keep (twice the
// replay window: a message stamped at the window's far edge stays
// acceptable that long), so a copy is refused as seen until it is refused
// as stale; and at most max of them, see [WithReplayMemory]. Ids are
// recorded only after a message verified and opened, so only members'
// valid messages take memory. Claims (a message, or a frame's ids
// together) leave in arrival order, so pruning costs O(expired).
type replayWindow struct {
	mu    sync.Mutex
	keep  time.Duration
	max   int
	floor int64 // ts (ms) of the newest message forgotten early: no later ts is accepted
	seen  map[MessageID]struct{}
	queue []seenClaim
	head  int
	base  time.Time // the first claim's now: expiries are offsets from it
}

// seenClaim is one accepted message or frame: its ids expire together and
// share its ts. One entry a frame, not one an id: appending 256 entries of
// 40 bytes for every frame, and the queue's growth copies, cost more than
// the map inserts themselves (docs/performance.md). A frame's ids are the
// slice open made for it, kept by the window; a message's id is held in
// the entry, so a window of single messages holds no pointers but the
// map's. The expiry is an offset from the window's base rather than a
// time.Time (which holds a pointer); now.Sub(base) uses the monotonic
// clock when both have it, as now.After did.
type seenClaim struct {
	id      MessageID   // a message's id; a frame's are in ids
	ids     []MessageID // a frame's ids, or nil
	expires time.Duration
	ts      int64 // the signed time (ms): the floor when forgotten early
}

func (ch *Channel) newReplayWindow() *replayWindow {
	return &replayWindow{keep: 2 * ch.window, max: ch.replayMemory, seen: make(map[MessageID]struct{})}
}

// claim records the ids of a message or frame stamped ts and returns nil
// if all were new. A frame's ids are claimed together: if any was seen
// before, or one appears twice, none is recorded and the whole frame is
// refused (ErrChannelReplay), so a frame is delivered whole or not at all.
// A message stamped no later than an id forgotten early is refused as
// ErrChannelStale: its copy may have been among the forgotten. Each id
// costs one map operation: an insert that does not grow the map found it
// there already. The window keeps ids of more than one (a frame's): the
// caller must not change them afterwards.
func (w *replayWindow) claim(ids []MessageID, ts int64, now time.Time) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.base.IsZero() {
		w.base = now
	}
	at := now.Sub(w.base)
	for w.head < len(w.queue) && at > w.queue[w.head].expires {
		w.forget()
	}
	if ts <= w.floor {
		return ErrChannelStale
	}
	for i, id := range ids {
		n := len(w.seen)
		if w.seen[id] = struct{}{}; len(w.seen) == n {
			for _, undo := range ids[:i] {
				delete(w.seen, undo)
			}
			return ErrChannelReplay
		}
	}
	c := seenClaim{expires: at + w.keep, ts: ts}
	if len(ids) == 1 {
		c.id = ids[0]
	} else {
		c.ids = ids
	}
	w.queue = append(w.queue, c)
	for len(w.seen) > w.max {
		w.floor = max(w.floor, w.queue[w.head].ts)
		w.forget()
	}
	if w.head > len(w.queue)/2 {
		n := copy(w.queue, w.queue[w.head:])
		clear(w.queue[n:]) // no stale references to forgotten frames' ids
		w.queue, w.head = w.queue[:n], 0
	}
	return nil
}

// forget drops the oldest claim's ids.
func (w *replayWindow) forget() {
	c := &w.queue[w.head]
	if c.ids == nil {
		delete(w.seen, c.id)
	}
	for _, id := range c.ids {
		delete(w.seen, id)
	}
	*c = seenClaim{}
	w.head++
}
