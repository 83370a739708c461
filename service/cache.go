package service

import (
	"container/list"
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/store"
)

// Caches on the request path (docs/performance.md).
//
// The identity cache answers step 5 of the pipeline (signer → active
// identity) from memory. It is kept current by one KV watch on the id.> and
// signer.> keys, and it answers only while it is provably recent, a proof
// that writes nothing (an idle replica is silent: no Raft traffic, no
// fsync). Every IdentityMaxStale/4 the replica notes the time W and then
// asks the stream leader for the bucket's last revision L and, unless L is
// one already proven, the newest revision N under id. and signer.; every
// identity change acknowledged before W is at or below both. The stream is
// totally ordered, so once the watch has delivered revision N (or L did not
// move since the last proof), every identity change committed before W has
// been applied: the cache is fresh as of W. It answers only if it was
// fresh less than IdentityMaxStale ago; otherwise (watch stalled,
// connection lost, still loading, store unreachable) requests fall back to
// reading the store, as they do on any miss. Hence a disable or key change
// committed at T is honoured by every request served after
// T + IdentityMaxStale — normally within the watch's delivery latency
// (measured: docs/performance.md). A watch that shows a prefix of an
// atomic batch (an id.* record before its signer.* index) can only cause a
// miss: a hit needs both keys and the identity's signing key to match.
//
// The object cache holds sealed-key objects by name. Objects are immutable:
// a name carries the digest of the request that wrote it and is never
// rewritten, so a cached copy cannot be stale. Whether a caller may read an
// object is decided from current KV records before the cache is consulted.

// identityPrefixes are the key families the identity cache holds.
var identityPrefixes = []string{famIdentity, famSigner}

// freshness says whether a watch-fed cache may answer: its initial load is
// complete and a proof (proveFreshness) showed it current as of a time less
// than maxStale ago. mu guards it and the cache that embeds it.
type freshness struct {
	mu       sync.RWMutex
	maxStale time.Duration
	loaded   bool
	freshAt  time.Time // the cache held every change committed before it
	// wrote is when this replica last committed an identity change: the
	// cache answers only from a proof started after it, so a replica's own
	// disable is never answered from the cache's older view.
	wrote   time.Time
	seen    uint64 // revision of the newest entry applied
	proven  uint64 // the bucket's last revision at the newest proof
	pending *proof // a proof waiting for the watch to deliver its revision
}

// proof is one freshness check: at is when it started, last the bucket's
// last revision and need the newest revision of a watched key, both read
// after at.
type proof struct {
	at         time.Time
	last, need uint64
}

// markLoaded records that the watch delivered every current value.
func (f *freshness) markLoaded() {
	f.mu.Lock()
	f.loaded = true
	f.mu.Unlock()
}

// forget marks the cache unloaded; the caller holds mu.
func (f *freshness) forget() {
	f.loaded, f.freshAt, f.seen, f.proven, f.pending = false, time.Time{}, 0, 0, nil
}

func (f *freshness) fresh(now time.Time) bool {
	return f.loaded && now.Sub(f.freshAt) < f.maxStale && f.freshAt.After(f.wrote)
}

// committed records that this replica committed an identity change at t.
func (f *freshness) committed(t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t.After(f.wrote) {
		f.wrote = t
	}
}

// noteCommit tells the identity cache that writes committed now, if any of
// them is an identity key.
func (s *Service) noteCommit(writes []store.Write) {
	if s.ids == nil {
		return
	}
	for _, w := range writes {
		for _, p := range identityPrefixes {
			if strings.HasPrefix(w.Key, p) {
				s.ids.committed(time.Now())
				return
			}
		}
	}
}

// unmoved reports whether the bucket's last revision is the one the newest
// proof established, and if so renews freshness as of at: nothing was
// written since.
func (f *freshness) unmoved(at time.Time, last uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.loaded || f.proven == 0 || last != f.proven {
		return false
	}
	f.renew(proof{at: at, last: last})
	return true
}

// offer records a proof; it holds once the watch has delivered p.need.
func (f *freshness) offer(p proof) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.loaded {
		return
	}
	if f.seen >= p.need {
		f.renew(p)
		return
	}
	f.pending = &p
}

// saw records that the watch delivered revision rev; the caller holds mu.
func (f *freshness) saw(rev uint64) {
	f.seen = max(f.seen, rev)
	if p := f.pending; p != nil && f.loaded && f.seen >= p.need {
		f.renew(*p)
	}
}

// renew makes the cache fresh as of p.at; the caller holds mu.
func (f *freshness) renew(p proof) {
	if p.at.After(f.freshAt) {
		f.freshAt = p.at
	}
	f.proven, f.pending = max(f.proven, p.last), nil
}

// identityCache maps signing keys to identities.
type identityCache struct {
	freshness
	bySigner   map[string]string // signing key → endpoint
	byEndpoint map[string]*api.Identity
}

func newIdentityCache(maxStale time.Duration) *identityCache {
	return &identityCache{freshness: freshness{maxStale: maxStale}, bySigner: map[string]string{}, byEndpoint: map[string]*api.Identity{}}
}

// lookup returns a copy of the identity signing with pub, if the cache is
// fresh and holds it. ok false means: read the store.
func (ic *identityCache) lookup(pub string, now time.Time) (id *api.Identity, ok bool) {
	if ic == nil {
		return nil, false
	}
	ic.mu.RLock()
	defer ic.mu.RUnlock()
	if !ic.fresh(now) {
		return nil, false
	}
	ep, found := ic.bySigner[pub]
	if !found {
		return nil, false
	}
	cached := ic.byEndpoint[ep]
	if cached == nil || cached.SignKey != pub {
		return nil, false
	}
	cp := *cached
	return &cp, true
}

// byEndpointLookup returns a copy of endpoint's identity, if the cache is
// fresh and holds it.
func (ic *identityCache) byEndpointLookup(endpoint string, now time.Time) (*api.Identity, bool) {
	if ic == nil {
		return nil, false
	}
	ic.mu.RLock()
	defer ic.mu.RUnlock()
	cached := ic.byEndpoint[endpoint]
	if !ic.fresh(now) || cached == nil {
		return nil, false
	}
	cp := *cached
	return &cp, true
}

// reset forgets everything (the watch is restarting).
func (ic *identityCache) reset() {
	ic.mu.Lock()
	ic.bySigner, ic.byEndpoint = map[string]string{}, map[string]*api.Identity{}
	ic.forget()
	ic.mu.Unlock()
}

// apply folds one watched KV entry into the cache.
func (ic *identityCache) apply(e store.Change) {
	key, deleted := e.Key, e.Deleted
	ic.mu.Lock()
	defer ic.mu.Unlock()
	defer ic.saw(e.Rev)
	switch {
	case strings.HasPrefix(key, famSigner):
		pub := key[len(famSigner):]
		var ep string
		if deleted || msgpack.Unmarshal(e.Value, &ep) != nil {
			delete(ic.bySigner, pub)
			return
		}
		ic.bySigner[pub] = ep
	case strings.HasPrefix(key, famIdentity):
		ep := key[len(famIdentity):]
		var id api.Identity
		if deleted || msgpack.Unmarshal(e.Value, &id) != nil {
			delete(ic.byEndpoint, ep)
			return
		}
		ic.byEndpoint[ep] = &id
	}
}

// watchedCache is a cache that one KV watch keeps current.
type watchedCache interface {
	apply(c store.Change)
	markLoaded()
	reset()
}

// keepCurrent feeds cache from a watch on prefixes until ctx ends,
// restarting the watch after any failure; the cache is reset (and answers
// nothing) until the new watch has loaded.
func keepCurrent(ctx context.Context, st *store.Store, cache watchedCache, prefixes []string, name string, log *slog.Logger) {
	for ctx.Err() == nil {
		start, n := time.Now(), 0
		err := st.Watch(ctx, prefixes, func(c store.Change) { n++; cache.apply(c) }, func() {
			cache.markLoaded()
			log.Info(name+" loaded", "took", time.Since(start).Round(time.Millisecond), "keys", n)
		})
		cache.reset()
		if ctx.Err() != nil {
			return
		}
		log.Warn(name+" watch ended; serving from the store until it is back", "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// proveFreshness checks every interval that f's watch is current, reading
// the store and writing nothing (see the comment at the top).
func proveFreshness(ctx context.Context, st freshnessSource, f *freshness, interval time.Duration) {
	t := time.NewTicker(max(interval, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		at := time.Now()
		pctx, cancel := context.WithTimeout(ctx, 4*interval)
		last, err := st.LastSeq(pctx)
		if err == nil && !f.unmoved(at, last) {
			var need uint64
			if need, err = st.LastRevision(pctx, identityPrefixes...); err == nil {
				f.offer(proof{at: at, last: last, need: need})
			}
		}
		cancel()
	}
}

// freshnessSource is what a freshness proof reads (a *store.Store).
type freshnessSource interface {
	LastSeq(ctx context.Context) (uint64, error)
	LastRevision(ctx context.Context, prefixes ...string) (uint64, error)
}

var (
	_ watchedCache    = (*identityCache)(nil)
	_ watchedCache    = (*roomIndex)(nil)
	_ freshnessSource = (*store.Store)(nil)
)

// objectCache is a least-recently-used cache of immutable objects, bounded
// by the bytes it holds.
type objectCache struct {
	max int

	mu    sync.Mutex
	size  int
	ll    *list.List
	items map[string]*list.Element
}

type objectEntry struct {
	name string
	data []byte
}

func newObjectCache(maxBytes int) *objectCache {
	return &objectCache{max: maxBytes, ll: list.New(), items: map[string]*list.Element{}}
}

// get returns a cached object; callers must not modify it.
func (oc *objectCache) get(name string) ([]byte, bool) {
	if oc == nil {
		return nil, false
	}
	oc.mu.Lock()
	defer oc.mu.Unlock()
	el, ok := oc.items[name]
	if !ok {
		return nil, false
	}
	oc.ll.MoveToFront(el)
	return el.Value.(*objectEntry).data, true
}

// put caches an object unless it is larger than an eighth of the cache.
func (oc *objectCache) put(name string, data []byte) {
	if oc == nil || len(data)+len(name) > oc.max/8 {
		return
	}
	oc.mu.Lock()
	defer oc.mu.Unlock()
	if _, ok := oc.items[name]; ok {
		return
	}
	oc.items[name] = oc.ll.PushFront(&objectEntry{name: name, data: data})
	oc.size += len(data) + len(name)
	for oc.size > oc.max {
		el := oc.ll.Back()
		e := el.Value.(*objectEntry)
		oc.ll.Remove(el)
		delete(oc.items, e.name)
		oc.size -= len(e.data) + len(e.name)
	}
}

// startCaches starts the caches the configuration asks for. The watched
// caches watch the store's own bucket, so they can never watch another one
// than the service reads.
func (s *Service) startCaches() {
	if s.cfg.KeyCacheBytes > 0 {
		s.keys = newObjectCache(s.cfg.KeyCacheBytes)
	}
	ctx, stop := context.WithCancel(context.Background())
	s.stopCache = stop
	if d := s.cfg.IdentityMaxStale; d > 0 {
		s.ids = newIdentityCache(d)
		go keepCurrent(ctx, s.store, s.ids, identityPrefixes, "identity cache", s.cfg.Logger)
		go proveFreshness(ctx, s.store, &s.ids.freshness, d/4)
	}
	if s.cfg.RoomIndexWait > 0 {
		s.index = newRoomIndex()
		// Every key, in one ordered watch: what the index relies on is the
		// order of the stream (roomindex.go). One filter, because
		// nats-server delivers a consumer with several filters ~7× slower
		// (docs/performance.md); the index skips the keys it does not hold.
		go keepCurrent(ctx, s.store, s.index, nil, "room index", s.cfg.Logger)
	}
}

func (s *Service) stopCaches() {
	if s.stopCache != nil {
		s.stopCache()
	}
}

// cachedObject reads a sealed-key object through the object cache.
func (s *Service) cachedObject(ctx context.Context, name string) ([]byte, error) {
	if b, ok := s.keys.get(name); ok {
		return b, nil
	}
	b, err := s.store.GetObject(ctx, name)
	if err != nil {
		return nil, err
	}
	s.keys.put(name, b)
	return b, nil
}
