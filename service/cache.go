package service

import (
	"container/list"
	"context"
	"errors"
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

// identityCache maps signing keys to identities.
type identityCache struct {
	maxStale time.Duration

	mu         sync.RWMutex
	bySigner   map[string]string // signing key → endpoint
	byEndpoint map[string]*api.Identity
	loaded     bool
	freshAt    time.Time // write time of the newest probe the watch delivered
}

func newIdentityCache(maxStale time.Duration) *identityCache {
	return &identityCache{maxStale: maxStale, bySigner: map[string]string{}, byEndpoint: map[string]*api.Identity{}}
}

// lookup returns a copy of the identity signing with pub, if the cache is
// fresh and holds it. ok false means: read the store.
func (ic *identityCache) lookup(pub string, now time.Time) (id *api.Identity, ok bool) {
	if ic == nil {
		return nil, false
	}
	ic.mu.RLock()
	defer ic.mu.RUnlock()
	if !ic.loaded || now.Sub(ic.freshAt) >= ic.maxStale {
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

// reset forgets everything (the watch is restarting).
func (ic *identityCache) reset() {
	ic.mu.Lock()
	ic.bySigner, ic.byEndpoint = map[string]string{}, map[string]*api.Identity{}
	ic.loaded, ic.freshAt = false, time.Time{}
	ic.mu.Unlock()
}

// apply folds one watched KV entry into the cache.
func (ic *identityCache) apply(e jetstream.KeyValueEntry, probePrefix string) {
	key := e.Key()
	deleted := e.Operation() != jetstream.KeyValuePut
	ic.mu.Lock()
	defer ic.mu.Unlock()
	switch {
	case strings.HasPrefix(key, probePrefix):
		if deleted || !ic.loaded {
			return
		}
		ns, err := strconv.ParseInt(string(e.Value()), 10, 64)
		if err != nil {
			return
		}
		if w := time.Unix(0, ns); w.After(ic.freshAt) {
			ic.freshAt = w
		}
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

// run keeps the cache current until ctx ends: a watch, restarted after any
// failure, and the freshness probes.
func (ic *identityCache) run(ctx context.Context, kv jetstream.KeyValue, log func(msg string, args ...any)) {
	probe := probeKeyPrefix + nuid.Next() + "."
	go ic.probe(ctx, kv, probe)
	for ctx.Err() == nil {
		err := ic.watch(ctx, kv, probe)
		ic.reset()
		if ctx.Err() != nil {
			return
		}
		log("identity cache watch ended; serving from the store until it is back", "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func (ic *identityCache) watch(ctx context.Context, kv jetstream.KeyValue, probe string) error {
	w, err := kv.WatchFiltered(ctx, []string{"id.>", "signer.>", probe + ">"})
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, open := <-w.Updates():
			if !open {
				return errors.New("watch closed")
			}
			if e == nil {
				ic.mu.Lock()
				ic.loaded = true
				ic.mu.Unlock()
				continue
			}
			ic.apply(e, probe)
		}
	}
}

// probe writes a probe key every maxStale/4.
func (ic *identityCache) probe(ctx context.Context, kv jetstream.KeyValue, prefix string) {
	t := time.NewTicker(max(ic.maxStale/4, 10*time.Millisecond))
	defer t.Stop()
	for n := 0; ; n++ {
		w := time.Now()
		pctx, cancel := context.WithTimeout(ctx, ic.maxStale)
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

// startCaches starts the caches the configuration asks for.
// The identity cache watches the store's own bucket, so it can never watch
// another one than the service reads.
func (s *Service) startCaches() {
	if s.cfg.KeyCacheBytes > 0 {
		s.keys = newObjectCache(s.cfg.KeyCacheBytes)
	}
	if s.cfg.IdentityMaxStale < 0 {
		return
	}
	ctx, stop := context.WithCancel(context.Background())
	s.ids = newIdentityCache(s.cfg.IdentityMaxStale)
	s.stopCache = stop
	go s.ids.run(ctx, s.store.KV(), s.cfg.Logger.Warn)
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
