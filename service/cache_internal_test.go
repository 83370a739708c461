package service

import (
	"fmt"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/store"
)

// putEntry is a watched put of key holding v, at revision 1.
func putEntry(t *testing.T, key string, v any) store.Change {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return store.Change{Key: key, Value: b, Rev: 1}
}

// at is e as the watch delivers it at revision rev.
func at(c store.Change, rev uint64) store.Change { c.Rev = rev; return c }

// TestIdentityCacheFreshness: the cache answers only within maxStale of a
// proof that it held every identity change committed before the proof's
// start: the watch delivered the newest identity revision read after it,
// or the bucket did not move since the last proof. Proofs write nothing.
func TestIdentityCacheFreshness(t *testing.T) {
	ic := newIdentityCache(time.Second)
	id := api.Identity{Endpoint: "alice", SignKey: "UALICE"}
	now := time.Now()
	ic.apply(at(putEntry(t, "id.alice", &id), 1))
	ic.apply(at(putEntry(t, "signer.UALICE", "alice"), 2))
	ic.offer(proof{at: now, last: 2, need: 2})
	if _, ok := ic.lookup("UALICE", now); ok {
		t.Fatal("hit before the initial load completed")
	}
	ic.markLoaded()
	if _, ok := ic.lookup("UALICE", now); ok {
		t.Fatal("hit before any proof held")
	}
	ic.offer(proof{at: now, last: 5, need: 2})
	got, ok := ic.lookup("UALICE", now.Add(500*time.Millisecond))
	if !ok || got.Endpoint != "alice" {
		t.Fatalf("lookup = %v %v, want alice", got, ok)
	}
	got.Disabled = true // a caller's copy must not change the cache
	if again, _ := ic.lookup("UALICE", now); again.Disabled {
		t.Fatal("lookup returned the cached record itself")
	}
	if _, ok := ic.lookup("UALICE", now.Add(time.Second)); ok {
		t.Fatal("hit when the newest proof is max-stale old")
	}
	// A proof whose identity revision the watch has not delivered waits.
	ic.offer(proof{at: now.Add(2 * time.Second), last: 7, need: 7})
	if _, ok := ic.lookup("UALICE", now.Add(2500*time.Millisecond)); ok {
		t.Fatal("hit on a proof the watch has not caught up with")
	}
	ic.apply(at(putEntry(t, "id.bob", &api.Identity{Endpoint: "bob", SignKey: "UBOB"}), 7))
	if _, ok := ic.lookup("UALICE", now.Add(2500*time.Millisecond)); !ok {
		t.Fatal("miss once the watch delivered the proof's revision")
	}
	// An unmoved bucket renews freshness without reading any key; a moved
	// one does not.
	if !ic.unmoved(now.Add(4*time.Second), 7) || ic.unmoved(now.Add(5*time.Second), 8) {
		t.Fatal("unmoved: want true for the proven revision 7 only")
	}
	if _, ok := ic.lookup("UALICE", now.Add(4900*time.Millisecond)); !ok {
		t.Fatal("miss after an unmoved bucket renewed freshness")
	}
	// An older proof arriving late does not move freshness back.
	ic.offer(proof{at: now.Add(-time.Hour), last: 1, need: 1})
	if _, ok := ic.lookup("UALICE", now.Add(4900*time.Millisecond)); !ok {
		t.Fatal("an older proof made the cache stale")
	}
	// After a reset (the watch restarts) no proof counts until it reloads.
	ic.reset()
	ic.offer(proof{at: now.Add(6 * time.Second), last: 7, need: 0})
	ic.markLoaded()
	if _, ok := ic.lookup("UALICE", now.Add(6*time.Second)); ok || ic.unmoved(now.Add(6*time.Second), 7) {
		t.Fatal("a proof offered before the reload counted")
	}
}

// TestIdentityCacheOwnCommit: after this replica commits an identity
// change, the cache answers only from a proof started after the commit,
// so the replica never answers its own disable from the older view
// (client ExampleClient_Disable failed on a loaded machine before).
func TestIdentityCacheOwnCommit(t *testing.T) {
	ic := newIdentityCache(time.Minute)
	now := time.Now()
	ic.apply(at(putEntry(t, "id.bob", &api.Identity{Endpoint: "bob", SignKey: "UBOB"}), 1))
	ic.apply(at(putEntry(t, "signer.UBOB", "bob"), 2))
	ic.markLoaded()
	ic.offer(proof{at: now, last: 2, need: 2})
	ic.committed(now.Add(time.Second))
	if _, ok := ic.lookup("UBOB", now.Add(2*time.Second)); ok {
		t.Fatal("hit from a proof older than this replica's commit")
	}
	ic.offer(proof{at: now.Add(3 * time.Second), last: 3, need: 3})
	ic.apply(at(putEntry(t, "id.bob", &api.Identity{Endpoint: "bob", SignKey: "UBOB", Disabled: true}), 3))
	if got, ok := ic.lookup("UBOB", now.Add(4*time.Second)); !ok || !got.Disabled {
		t.Fatalf("lookup = %v %v, want the disabled record", got, ok)
	}
}

func TestIdentityCacheUpdates(t *testing.T) {
	now := time.Now()
	fresh := func() *identityCache {
		ic := newIdentityCache(time.Minute)
		ic.markLoaded()
		ic.offer(proof{at: now})
		ic.apply(putEntry(t, "id.bob", &api.Identity{Endpoint: "bob", SignKey: "UBOB"}))
		ic.apply(putEntry(t, "signer.UBOB", "bob"))
		return ic
	}
	for _, tc := range []struct {
		name   string
		change []store.Change
		pub    string
		hit    bool
		dis    bool
	}{
		{"unchanged", nil, "UBOB", true, false},
		{"disabled", []store.Change{putEntry(t, "id.bob", &api.Identity{Endpoint: "bob", SignKey: "UBOB", Disabled: true})}, "UBOB", true, true},
		{"identity deleted", []store.Change{{Key: "id.bob", Deleted: true}}, "UBOB", false, false},
		{"signer purged", []store.Change{{Key: "signer.UBOB", Deleted: true}}, "UBOB", false, false},
		// Key rotation seen halfway (a prefix of the batch): the identity
		// moved to a new key, the old index is still there.
		{"rotated, index pending", []store.Change{putEntry(t, "id.bob", &api.Identity{Endpoint: "bob", SignKey: "UNEW"})}, "UBOB", false, false},
		{"rotated, new key before its index", []store.Change{putEntry(t, "id.bob", &api.Identity{Endpoint: "bob", SignKey: "UNEW"})}, "UNEW", false, false},
		{"unknown signer", nil, "UNOBODY", false, false},
		{"undecodable record", []store.Change{{Key: "id.bob", Value: []byte{0xc1}}}, "UBOB", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ic := fresh()
			for _, e := range tc.change {
				ic.apply(e)
			}
			got, ok := ic.lookup(tc.pub, now)
			if ok != tc.hit {
				t.Fatalf("hit = %v, want %v", ok, tc.hit)
			}
			if ok && got.Disabled != tc.dis {
				t.Fatalf("disabled = %v, want %v", got.Disabled, tc.dis)
			}
		})
	}
	var nilCache *identityCache
	if _, ok := nilCache.lookup("UBOB", now); ok {
		t.Fatal("a disabled (nil) cache answered")
	}
}

func TestObjectCacheLRU(t *testing.T) {
	oc := newObjectCache(8 * 100) // items up to 100 bytes are cached
	blob := func(n int) []byte { return make([]byte, n) }
	for i := 0; i < 8; i++ {
		oc.put(fmt.Sprintf("o%d", i), blob(98)) // 100 bytes with the name: 800 fit
	}
	for i := 0; i < 8; i++ {
		if _, ok := oc.get(fmt.Sprintf("o%d", i)); !ok {
			t.Fatalf("o%d missing while the cache is not full", i)
		}
	}
	oc.get("o0")           // o0 is now the most recently used, o1 the least
	oc.put("o8", blob(98)) // evicts o1
	if _, ok := oc.get("o1"); ok {
		t.Fatal("the least recently used o1 was not evicted")
	}
	if _, ok := oc.get("o0"); !ok {
		t.Fatal("recently used o0 was evicted")
	}
	if oc.size > oc.max {
		t.Fatalf("size %d above max %d", oc.size, oc.max)
	}
	oc.put("big", blob(200))
	if _, ok := oc.get("big"); ok {
		t.Fatal("an object above max/8 was cached")
	}
	oc.put("o0", blob(1)) // immutable: a second put changes nothing
	if b, _ := oc.get("o0"); len(b) != 98 {
		t.Fatalf("o0 has %d bytes after a second put, want 98", len(b))
	}
	total := 0
	for el := oc.ll.Front(); el != nil; el = el.Next() {
		e := el.Value.(*objectEntry)
		total += len(e.data) + len(e.name)
	}
	if total != oc.size || len(oc.items) != oc.ll.Len() {
		t.Fatalf("accounting: size %d vs %d, items %d vs list %d", oc.size, total, len(oc.items), oc.ll.Len())
	}
	var nilCache *objectCache
	nilCache.put("x", blob(1))
	if _, ok := nilCache.get("x"); ok {
		t.Fatal("a disabled (nil) cache answered")
	}
}
