package client

import (
	"sync"
	"time"
)

// replayWindow remembers the ids of accepted messages for keep (twice the
// replay window: a message stamped at the window's far edge stays
// acceptable that long), so a copy is refused as seen until it is refused
// as stale. Ids are recorded only after a message verified and opened, so
// only members' valid messages take memory: at most their rate times keep.
// Entries expire in arrival order, so pruning costs O(expired).
type replayWindow struct {
	mu    sync.Mutex
	keep  time.Duration
	seen  map[MessageID]struct{}
	queue []seenID
	head  int
	base  time.Time // the first claim's now: expiries are offsets from it
}

// seenID's expiry is an offset from the window's base rather than a
// time.Time: the queue then holds no pointers (time.Time has one), so
// appending to it costs no write barriers and the GC does not scan it.
// now.Sub(base) uses the monotonic clock when both have it, as now.After
// did.
type seenID struct {
	id      MessageID
	expires time.Duration
}

func (ch *Channel) newReplayWindow() *replayWindow {
	return &replayWindow{keep: 2 * ch.window, seen: make(map[MessageID]struct{})}
}

// claim records ids and reports whether all were new. A frame's ids are
// claimed together: if any was seen before, or one appears twice, none is
// recorded and the whole frame is refused, so a frame is delivered whole
// or not at all. Each id costs one map operation: an insert that does not
// grow the map found it there already.
func (w *replayWindow) claim(ids []MessageID, now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.base.IsZero() {
		w.base = now
	}
	at := now.Sub(w.base)
	for w.head < len(w.queue) && at > w.queue[w.head].expires {
		delete(w.seen, w.queue[w.head].id)
		w.head++
	}
	if w.head > len(w.queue)/2 {
		w.queue = append(w.queue[:0], w.queue[w.head:]...)
		w.head = 0
	}
	for i, id := range ids {
		n := len(w.seen)
		if w.seen[id] = struct{}{}; len(w.seen) == n {
			for _, undo := range ids[:i] {
				delete(w.seen, undo)
			}
			return false
		}
	}
	expires := at + w.keep
	for _, id := range ids {
		w.queue = append(w.queue, seenID{id, expires})
	}
	return true
}
