package service

import (
	"context"
	"sync"
	"time"

	"github.com/unibus/membership/store"
)

// Prefetch. A mutation's plan reads several keys whose names the request
// alone fixes (an add-member's room, the member's records, its identity,
// the room's audit head). Read one after another they cost a store round
// trip each before the commit, and a replica has only Config.Workers
// handlers to wait them out, so they bound its write rate as much as the
// batch does (docs/performance.md, "Shards"). prefetch sends them at once;
// the plan's own reads, in their own order and with their own checks, then
// take the answers instead of sending a read each.
//
// What is decided does not change: every read is still the same read of
// the store (never a cache), each answer is used at most once (a re-plan
// after a lost compare-and-set reads afresh), the batch's revisions still
// guard every key it writes, and a read made before the room's
// authorization check is only a read — its answer is used only by the
// plan's read of that very key, after the checks before it passed, as the
// concurrent reads of a room read already are (memberRoom). A key the
// batch does not guard (the member's identity, in the base bucket) is read
// a few milliseconds earlier than before: as if the request had come that
// much earlier. Keys are prefetched only once their ids are valid.

// fetched is one prefetched read's answer.
type fetched struct {
	ent store.Entry
	err error
}

// prefetches are a call's reads in flight, by key.
type prefetches struct {
	mu sync.Mutex
	m  map[string]chan fetched
}

// prefetch starts reading keys at once for c, a store request each;
// s.get takes the answers. The reads end with ctx (the request's).
func (s *Service) prefetch(ctx context.Context, c *call, keys ...string) {
	for i, ch := range c.pre.expect(keys) {
		go func() {
			start := time.Now()
			ent, err := s.shardOf(c, keys[i]).Get(ctx, keys[i])
			s.stats.of(c.op).storeLatency(time.Since(start))
			ch <- fetched{ent, err}
		}()
	}
}

// prefetchJoint starts reading keys of one room for c in one store request
// ([store.Shard.GetLast]: one direct get on a single-replica shard, a
// leader get per key at once on a replicated one); s.get takes the
// answers as prefetch's. A room's keys share its shard (shards.go), so
// the one request reads one snapshot of them.
func (s *Service) prefetchJoint(ctx context.Context, c *call, keys ...string) {
	chs := c.pre.expect(keys)
	go func() {
		start := time.Now()
		ents, err := s.shardOf(c, keys[0]).GetLast(ctx, keys...)
		s.stats.of(c.op).storeLatency(time.Since(start))
		for i, ch := range chs {
			var ent store.Entry
			if err == nil {
				ent = ents[i]
			}
			ch <- fetched{ent, err}
		}
	}()
}

// expect registers an answer to come for each of keys, in their order.
func (p *prefetches) expect(keys []string) []chan fetched {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = make(map[string]chan fetched, len(keys))
	}
	chs := make([]chan fetched, len(keys))
	for i, key := range keys {
		chs[i] = make(chan fetched, 1)
		p.m[key] = chs[i]
	}
	return chs
}

// take removes and returns key's prefetched read, if there is one.
func (p *prefetches) take(key string) chan fetched {
	p.mu.Lock()
	defer p.mu.Unlock()
	ch := p.m[key]
	delete(p.m, key)
	return ch
}

// read reads key for c: the prefetched answer if one is in flight, else
// from the store.
func (s *Service) read(ctx context.Context, c *call, key string) (store.Entry, error) {
	if ch := c.pre.take(key); ch != nil {
		select {
		case f := <-ch:
			return f.ent, f.err
		case <-ctx.Done():
			return store.Entry{}, ctx.Err()
		}
	}
	start := time.Now()
	ent, err := s.shardOf(c, key).Get(ctx, key)
	s.stats.of(c.op).storeLatency(time.Since(start))
	return ent, err
}
