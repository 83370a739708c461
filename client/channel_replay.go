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
	mu     sync.Mutex
	keep   time.Duration
	max    int
	floor  int64 // ts (ms) of the newest message forgotten early: no later ts is accepted
	seen   map[MessageID]struct{}
	claims fifo[seenClaim]
	frames fifo[[]MessageID] // the ids of the frames among claims, in the same order
	base   time.Time         // the first claim's now: expiries are offsets from it
}

// seenClaim is one accepted message or frame: its ids expire together and
// share its ts. One entry a frame, not one an id: appending 256 entries
// for every frame, and the queue's growth copies, cost more than the map
// inserts themselves (docs/performance.md). A frame's ids are the slice
// open made for them, kept in frames; a message's id is held here. So
// claims holds no pointers (no write barriers, nothing for the GC to
// scan), and frames one per frame. The expiry is an offset from the
// window's base rather than a time.Time (which holds a pointer);
// now.Sub(base) uses the monotonic clock when both have it, as now.After
// did.
type seenClaim struct {
	id      MessageID // a message's id
	frame   bool      // a frame: its ids are the next in frames
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
// there already. The window keeps a frame's ids slice: the caller must not
// change it afterwards.
func (w *replayWindow) claim(ids []MessageID, ts int64, now time.Time) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.base.IsZero() {
		w.base = now
	}
	at := now.Sub(w.base)
	for w.claims.len() > 0 && at > w.claims.front().expires {
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
	c := seenClaim{expires: at + w.keep, ts: ts, frame: len(ids) > 1}
	if c.frame {
		w.frames.push(ids)
	} else {
		c.id = ids[0]
	}
	w.claims.push(c)
	for len(w.seen) > w.max {
		w.floor = max(w.floor, w.claims.front().ts)
		w.forget()
	}
	return nil
}

// forget drops the oldest claim's ids.
func (w *replayWindow) forget() {
	c := w.claims.pop()
	if !c.frame {
		delete(w.seen, c.id)
		return
	}
	for _, id := range w.frames.pop() {
		delete(w.seen, id)
	}
}

// fifo is a queue on a slice: pop clears what it hands out (no reference
// kept) and moves the rest to the front once more than half is popped, so
// each item is copied O(1) times on average.
type fifo[T any] struct {
	items []T
	head  int
}

func (q *fifo[T]) len() int  { return len(q.items) - q.head }
func (q *fifo[T]) front() *T { return &q.items[q.head] }
func (q *fifo[T]) push(v T)  { q.items = append(q.items, v) }

func (q *fifo[T]) pop() T {
	v := q.items[q.head]
	var zero T
	q.items[q.head] = zero
	q.head++
	if q.head > len(q.items)/2 {
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	return v
}
