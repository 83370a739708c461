package service

import (
	"container/list"
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/unibus/membership/service/api"
)

// Caches on the request path (docs/performance.md).
//
// The identity cache answers step 5 of the pipeline (signer → active
// identity) from memory. It is kept current by one KV watch on the id.> and
// signer.> keys, and it answers only while it is provably recent: every
// IdentityMaxStale/4 the replica writes a probe key (cachefresh.<id>.<n>,
// with a TTL) holding the time it was written, into the same bucket and the
// same watch. The stream is totally ordered, so once the watch delivers a
// probe written at W, every identity change committed before W has been
// applied. The cache answers only if it has seen a probe written less than
// IdentityMaxStale ago; otherwise (watch stalled, connection lost, still
// loading) requests fall back to reading the store, as they do on any miss.
// Hence a disable or key change committed at T is honoured by every request
// served after T + IdentityMaxStale — normally within the watch's delivery
// latency (measured: docs/performance.md). A watch that shows a prefix of an
// atomic batch (an id.* record before its signer.* index) can only cause a
// miss: a hit needs both keys and the identity's signing key to match.
//
// The object cache holds sealed-key objects by name. Objects are immutable:
// a name carries the digest of the request that wrote it and is never
// rewritten, so a cached copy cannot be stale. Whether a caller may read an
// object is decided from current KV records before the cache is consulted.

// probeKeyPrefix starts the freshness probe keys.
const probeKeyPrefix = "cachefresh."

// probeTTL is how long a probe key lives; the watch needs it only once.
const probeTTL = 10 * time.Second

// freshness says whether a watch-fed cache may answer: its initial load is
// complete and it has seen one of this replica's probes written less than
// maxStale ago. mu guards it and the cache that embeds it.
type freshness struct {
	mu       sync.RWMutex
	maxStale time.Duration
	loaded   bool
	freshAt  time.Time // write time of the newest probe the watch delivered
}

// markLoaded records that the watch delivered every current value.
func (f *freshness) markLoaded() {
	f.mu.Lock()
	f.loaded = true
	f.mu.Unlock()
}

// forget marks the cache unloaded; the caller holds mu.
func (f *freshness) forget() { f.loaded, f.freshAt = false, time.Time{} }

func (f *freshness) fresh(now time.Time) bool {
	return f.loaded && now.Sub(f.freshAt) < f.maxStale
}

// sawProbe folds in one of this replica's probe keys; true if e was one.
func (f *freshness) sawProbe(e jetstream.KeyValueEntry, probePrefix string) bool {
	if !strings.HasPrefix(e.Key(), probePrefix) {
		return false
	}
	if e.Operation() != jetstream.KeyValuePut || !f.loaded {
		return true
	}
	if ns, err := strconv.ParseInt(string(e.Value()), 10, 64); err == nil {
		if w := time.Unix(0, ns); w.After(f.freshAt) {
			f.freshAt = w
		}
	}
	return true
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
func (ic *identityCache) apply(e jetstream.KeyValueEntry, probePrefix string) {
	key := e.Key()
	deleted := e.Operation() != jetstream.KeyValuePut
	ic.mu.Lock()
	defer ic.mu.Unlock()
	switch {
	case ic.sawProbe(e, probePrefix):
	case strings.HasPrefix(key, "signer."):
		pub := key[len("signer."):]
		var ep string
		if deleted || msgpack.Unmarshal(e.Value(), &ep) != nil {
			delete(ic.bySigner, pub)
			return
		}
		ic.bySigner[pub] = ep
	case strings.HasPrefix(key, "id."):
		ep := key[len("id."):]
		var id api.Identity
		if deleted || msgpack.Unmarshal(e.Value(), &id) != nil {
			delete(ic.byEndpoint, ep)
			return
		}
		ic.byEndpoint[ep] = &id
	}
}

// watchedCache is a cache that one KV watch keeps current.
type watchedCache interface {
	apply(e jetstream.KeyValueEntry, probePrefix string)
	markLoaded()
	reset()
}

// keepCurrent feeds cache from a watch on filters, which must include this
// replica's probe keys, until ctx ends, restarting the watch after any
// failure; the cache is reset (and answers nothing) until the new watch has
// loaded.
func keepCurrent(ctx context.Context, kv jetstream.KeyValue, cache watchedCache, filters []string, probe, name string, log *slog.Logger) {
	for ctx.Err() == nil {
		err := watchInto(ctx, kv, cache, filters, probe, func(d time.Duration, n int) {
			log.Info(name+" loaded", "took", d.Round(time.Millisecond), "keys", n)
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

func watchInto(ctx context.Context, kv jetstream.KeyValue, cache watchedCache, filters []string, probe string, loaded func(time.Duration, int)) error {
	start := time.Now()
	w, err := kv.WatchFiltered(ctx, filters)
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, open := <-w.Updates():
			if !open {
				return errors.New("watch closed")
			}
			if e == nil {
				cache.markLoaded()
				loaded(time.Since(start), n)
				continue
			}
			cache.apply(e, probe)
		}
	}
}

// writeProbes writes a probe key every interval, holding its write time.
func writeProbes(ctx context.Context, kv jetstream.KeyValue, prefix string, interval time.Duration) {
	t := time.NewTicker(max(interval, 10*time.Millisecond))
	defer t.Stop()
	for n := 0; ; n++ {
		w := time.Now()
		pctx, cancel := context.WithTimeout(ctx, 4*interval)
		_, _ = kv.Create(pctx, prefix+strconv.Itoa(n), []byte(strconv.FormatInt(w.UnixNano(), 10)), jetstream.KeyTTL(probeTTL))
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

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
	kv, probe := s.store.KV(), probeKeyPrefix+nuid.Next()+"."
	if d := s.cfg.IdentityMaxStale; d > 0 {
		s.ids = newIdentityCache(d)
		go keepCurrent(ctx, kv, s.ids, []string{"id.>", "signer.>", probe + ">"}, probe, "identity cache", s.cfg.Logger)
		go writeProbes(ctx, kv, probe, d/4)
	}
	if s.cfg.RoomIndexWait > 0 {
		s.index = newRoomIndex()
		// Every key, in one ordered watch: what the index relies on is the
		// order of the stream (roomindex.go). One filter, because
		// nats-server delivers a consumer with several filters ~7× slower
		// (docs/performance.md); the index skips the keys it does not hold.
		go keepCurrent(ctx, kv, s.index, []string{">"}, "", "room index", s.cfg.Logger)
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
