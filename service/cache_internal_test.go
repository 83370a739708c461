package service

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/unibus/membership/service/api"
)

// entry is a watched KV entry as the identity cache sees it.
type entry struct {
	key   string
	value []byte
	op    jetstream.KeyValueOp
}

func (e entry) Bucket() string                  { return "membership" }
func (e entry) Key() string                     { return e.key }
func (e entry) Value() []byte                   { return e.value }
func (e entry) Revision() uint64                { return 1 }
func (e entry) Created() time.Time              { return time.Time{} }
func (e entry) Delta() uint64                   { return 0 }
func (e entry) Operation() jetstream.KeyValueOp { return e.op }

var _ jetstream.KeyValueEntry = entry{}

func putEntry(t *testing.T, key string, v any) entry {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return entry{key: key, value: b, op: jetstream.KeyValuePut}
}

func probeEntry(prefix string, w time.Time) entry {
	return entry{key: prefix + "0", value: []byte(strconv.FormatInt(w.UnixNano(), 10)), op: jetstream.KeyValuePut}
}

func TestIdentityCacheFreshness(t *testing.T) {
	const probe = "cachefresh.test."
	ic := newIdentityCache(time.Second)
	id := api.Identity{Endpoint: "alice", SignKey: "UALICE"}
	now := time.Now()
	ic.apply(putEntry(t, "id.alice", &id), probe)
	ic.apply(putEntry(t, "signer.UALICE", "alice"), probe)
	if _, ok := ic.lookup("UALICE", now); ok {
		t.Fatal("hit before the initial load completed")
	}
	ic.markLoaded()
	if _, ok := ic.lookup("UALICE", now); ok {
		t.Fatal("hit before any probe was seen")
	}
	ic.apply(probeEntry(probe, now), probe)
	got, ok := ic.lookup("UALICE", now.Add(500*time.Millisecond))
	if !ok || got.Endpoint != "alice" {
		t.Fatalf("lookup = %v %v, want alice", got, ok)
	}
	got.Disabled = true // a caller's copy must not change the cache
	if again, _ := ic.lookup("UALICE", now); again.Disabled {
		t.Fatal("lookup returned the cached record itself")
	}
	if _, ok := ic.lookup("UALICE", now.Add(time.Second)); ok {
		t.Fatal("hit when the newest probe is max-stale old")
	}
	// An older probe arriving late does not move freshness back.
	ic.apply(probeEntry(probe, now.Add(-time.Hour)), probe)
	if _, ok := ic.lookup("UALICE", now.Add(900*time.Millisecond)); !ok {
		t.Fatal("an older probe made the cache stale")
	}
	// Another replica's probe keys are not ours.
	ic.apply(probeEntry("cachefresh.other.", now.Add(10*time.Second)), probe)
	if _, ok := ic.lookup("UALICE", now.Add(5*time.Second)); ok {
		t.Fatal("another replica's probe counted as ours")
	}
}

func TestIdentityCacheUpdates(t *testing.T) {
	const probe = "cachefresh.test."
	now := time.Now()
	fresh := func() *identityCache {
		ic := newIdentityCache(time.Minute)
		ic.markLoaded()
		ic.apply(probeEntry(probe, now), probe)
		ic.apply(putEntry(t, "id.bob", &api.Identity{Endpoint: "bob", SignKey: "UBOB"}), probe)
		ic.apply(putEntry(t, "signer.UBOB", "bob"), probe)
		return ic
	}
	for _, tc := range []struct {
		name   string
		change []entry
		pub    string
		hit    bool
		dis    bool
	}{
		{"unchanged", nil, "UBOB", true, false},
		{"disabled", []entry{putEntry(t, "id.bob", &api.Identity{Endpoint: "bob", SignKey: "UBOB", Disabled: true})}, "UBOB", true, true},
		{"identity deleted", []entry{{key: "id.bob", op: jetstream.KeyValueDelete}}, "UBOB", false, false},
		{"signer purged", []entry{{key: "signer.UBOB", op: jetstream.KeyValuePurge}}, "UBOB", false, false},
		// Key rotation seen halfway (a prefix of the batch): the identity
		// moved to a new key, the old index is still there.
		{"rotated, index pending", []entry{putEntry(t, "id.bob", &api.Identity{Endpoint: "bob", SignKey: "UNEW"})}, "UBOB", false, false},
		{"rotated, new key before its index", []entry{putEntry(t, "id.bob", &api.Identity{Endpoint: "bob", SignKey: "UNEW"})}, "UNEW", false, false},
		{"unknown signer", nil, "UNOBODY", false, false},
		{"undecodable record", []entry{{key: "id.bob", value: []byte{0xc1}, op: jetstream.KeyValuePut}}, "UBOB", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ic := fresh()
			for _, e := range tc.change {
				ic.apply(e, probe)
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
