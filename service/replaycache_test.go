package service

import (
	"fmt"
	"testing"
	"time"
)

func TestReplayCacheVerdicts(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	rc := newReplayCache(time.Minute, 100)
	d1, d2 := []byte("digest-1"), []byte("digest-2")
	s1, s2 := []byte("sig-1"), []byte("sig-2")

	if hit, _ := rc.lookup("k", d1, s1, t0); hit != replayMiss {
		t.Fatalf("empty cache: %v, want miss", hit)
	}
	if rc.len() != 0 {
		t.Fatal("a lookup inserted an entry")
	}
	rc.insert("k", replayEntry{digest: d1, sig: s1, reply: []byte("reply"), applied: true}, t0)
	for _, tc := range []struct {
		name    string
		digest  []byte
		sig     []byte
		want    replayHit
		wantRep string
	}{
		{"same request", d1, s1, replayApplied, "reply"},
		{"same digest, other signature", d1, s2, replayReject, ""},
		{"other request, same nonce", d2, s1, replayReject, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hit, rep := rc.lookup("k", tc.digest, tc.sig, t0.Add(time.Second))
			if hit != tc.want || string(rep) != tc.wantRep {
				t.Fatalf("lookup = %v %q, want %v %q", hit, rep, tc.want, tc.wantRep)
			}
		})
	}
	// A read's claim (no digest) refuses any reuse, even byte-identical.
	rc.insert("r", replayEntry{}, t0)
	if hit, _ := rc.lookup("r", d1, s1, t0); hit != replayReject {
		t.Fatalf("read claim: %v, want reject", hit)
	}
	// A later insert for the same key refines what is known, never resets.
	rc.insert("r", replayEntry{digest: d1, sig: s1, reply: []byte("x"), applied: true}, t0.Add(time.Second))
	if hit, _ := rc.lookup("r", d1, s1, t0); hit != replayApplied {
		t.Fatalf("refined claim: %v, want applied", hit)
	}
	// A reply too large to keep: the same request goes on to the KV.
	rc.insert("big", replayEntry{digest: d1, sig: s1, reply: make([]byte, maxCachedReply+1), applied: true}, t0)
	if hit, _ := rc.lookup("big", d1, s1, t0); hit != replaySame {
		t.Fatalf("large reply: %v, want same", hit)
	}
}

func TestReplayCacheExpiry(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	rc := newReplayCache(time.Minute, 1000)
	for i := range 10 {
		rc.insert(fmt.Sprint("a", i), replayEntry{}, t0)
	}
	for i := range 10 {
		rc.insert(fmt.Sprint("b", i), replayEntry{}, t0.Add(30*time.Second))
	}
	if hit, _ := rc.lookup("a0", nil, nil, t0.Add(59*time.Second)); hit != replayReject {
		t.Fatalf("before its ttl: %v, want reject", hit)
	}
	if rc.len() != 20 {
		t.Fatalf("len %d, want 20", rc.len())
	}
	// At t0+60s exactly the first ten expire, and only they.
	if hit, _ := rc.lookup("a0", nil, nil, t0.Add(time.Minute)); hit != replayMiss {
		t.Fatalf("after its ttl: %v, want miss", hit)
	}
	if rc.len() != 10 {
		t.Fatalf("len %d after the first ten expired, want 10", rc.len())
	}
	if hit, _ := rc.lookup("b9", nil, nil, t0.Add(time.Minute)); hit != replayReject {
		t.Fatalf("younger entry: %v, want reject", hit)
	}
	rc.lookup("x", nil, nil, t0.Add(2*time.Minute))
	if rc.len() != 0 {
		t.Fatalf("len %d after all expired, want 0", rc.len())
	}
}

func TestReplayCacheSizeCap(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	const capacity = 500
	rc := newReplayCache(time.Hour, capacity)
	for i := range 5 * capacity {
		rc.insert(fmt.Sprint(i), replayEntry{}, t0.Add(time.Duration(i)*time.Millisecond))
		if rc.len() > capacity {
			t.Fatalf("len %d exceeds the cap %d", rc.len(), capacity)
		}
	}
	now := t0.Add(5 * capacity * time.Millisecond)
	if hit, _ := rc.lookup("0", nil, nil, now); hit != replayMiss {
		t.Fatal("the oldest entry survived eviction")
	}
	if hit, _ := rc.lookup(fmt.Sprint(5*capacity-1), nil, nil, now); hit != replayReject {
		t.Fatal("the newest entry was evicted")
	}
	if len(rc.queue)-rc.head != capacity {
		t.Fatalf("queue holds %d live slots, want %d", len(rc.queue)-rc.head, capacity)
	}
	if len(rc.queue) > 4*capacity {
		t.Fatalf("queue slice grew to %d: not compacted", len(rc.queue))
	}
	if newReplayCache(time.Hour, -1) != nil {
		t.Fatal("a negative size must disable the cache")
	}
}
