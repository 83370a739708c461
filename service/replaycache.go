package service

import (
	"bytes"
	"sync"
	"sync/atomic"
	"time"
)

// replayCache remembers signer+nonce pairs this replica saw claimed, so that
// a flood of one captured request is answered from memory: no signature
// verification, no identity lookup and no KV round trip per copy.
//
// Why it is safe to consult before the signature check (unlike the cache
// that H7 found): only a nonce claim that the shared KV accepted, or one the
// KV reports as already taken, inserts an entry, and that happens after the
// request passed every check. A lookup never inserts. An attacker with keys
// of its own therefore cannot grow or poison the cache, and a hit can only
// refuse a request (or, for the very same signed mutation, repeat the
// outcome the KV recorded for it). The KV claim stays the authority: a miss
// changes nothing, so eviction under the size cap or a restart only costs
// speed, never safety.
type replayCache struct {
	ttl  time.Duration
	max  int
	hits atomic.Int64 // requests answered from the cache

	mu      sync.Mutex
	entries map[string]*replayEntry
	// queue holds keys in insertion order. Every entry lives the same ttl,
	// so insertion order is expiry order, and pruning pops expired keys
	// from the head: O(expired), never a scan of the whole cache.
	queue []queued
	head  int
}

type queued struct {
	key     string
	expires time.Time
}

// replayEntry is what the cache knows about a claimed nonce. For a
// mutation it keeps the digest and signature of the request that claimed it
// and its reply, to answer the same signed request "already applied"; a
// read's entry, or one learnt from a KV record, may lack them.
type replayEntry struct {
	expires time.Time
	digest  []byte // nil: any use of the nonce is a replay
	sig     []byte
	reply   []byte
	applied bool // digest/sig identify a committed mutation whose reply is kept
}

// maxCachedReply bounds the reply bytes kept per entry; a larger reply is
// not kept and the same request falls through to the KV.
const maxCachedReply = 4096

func newReplayCache(ttl time.Duration, max int) *replayCache {
	if max <= 0 {
		return nil
	}
	return &replayCache{ttl: ttl, max: max, entries: make(map[string]*replayEntry)}
}

// replayHit is the verdict of a lookup.
type replayHit int

const (
	replayMiss    replayHit = iota // unknown: run the full pipeline
	replayReject                   // the nonce was claimed by another request
	replayApplied                  // this very signed mutation committed: answer 208 with reply
	replaySame                     // this very request, but no reply kept: let the KV answer
)

// lookup reports what the cache knows about key for a request with digest
// and sig. It never inserts.
func (rc *replayCache) lookup(key string, digest, sig []byte, now time.Time) (replayHit, []byte) {
	if rc == nil {
		return replayMiss, nil
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.pruneLocked(now)
	e, ok := rc.entries[key]
	if !ok {
		return replayMiss, nil
	}
	// Same canonical digest and same signature bytes: the identical signed
	// request (Ed25519 signatures are deterministic, and a different
	// signature over the same digest is either invalid or a forgery
	// attempt: it is refused like any other reuse of the nonce).
	if e.digest != nil && bytes.Equal(e.digest, digest) && bytes.Equal(e.sig, sig) {
		if e.applied {
			return replayApplied, e.reply
		}
		return replaySame, nil
	}
	return replayReject, nil
}

// insert records a claimed nonce. Call it only after the KV accepted the
// claim or reported the nonce as taken.
func (rc *replayCache) insert(key string, e replayEntry, now time.Time) {
	if rc == nil {
		return
	}
	if len(e.reply) > maxCachedReply {
		e.reply, e.applied = nil, false
	}
	e.expires = now.Add(rc.ttl)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.pruneLocked(now)
	if old, ok := rc.entries[key]; ok {
		// Keep the first claim's expiry so the queue stays in order; only
		// refine what is known about it.
		if old.digest == nil && e.digest != nil {
			old.digest, old.sig, old.reply, old.applied = e.digest, e.sig, e.reply, e.applied
		}
		return
	}
	for len(rc.entries) >= rc.max {
		rc.evictOldestLocked()
	}
	rc.entries[key] = &e
	rc.queue = append(rc.queue, queued{key: key, expires: e.expires})
}

// pruneLocked drops expired entries from the head of the queue.
func (rc *replayCache) pruneLocked(now time.Time) {
	for rc.head < len(rc.queue) && !now.Before(rc.queue[rc.head].expires) {
		rc.evictOldestLocked()
	}
}

// evictOldestLocked drops the oldest entry. Under the size cap that gives
// up memory, never safety: the KV claim still refuses the replay.
func (rc *replayCache) evictOldestLocked() {
	if rc.head >= len(rc.queue) {
		return
	}
	q := rc.queue[rc.head]
	rc.queue[rc.head] = queued{}
	rc.head++
	if e, ok := rc.entries[q.key]; ok && e.expires.Equal(q.expires) {
		delete(rc.entries, q.key)
	}
	// Compact once the consumed head outweighs the live tail, so the slice
	// does not grow without bound; amortised O(1) per entry.
	if rc.head > 1024 && rc.head*2 > len(rc.queue) {
		rc.queue = append([]queued(nil), rc.queue[rc.head:]...)
		rc.head = 0
	}
}

// len is the number of live entries (tests).
func (rc *replayCache) len() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.entries)
}
