package service

import (
	"fmt"
	"testing"
	"time"
)

func TestRateLimiterBurstAndRefill(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	rl := newRateLimiter(10, 5) // 10/s, burst 5
	for i := range 5 {
		if ok, _ := rl.allow("A", t0); !ok {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	ok, wait := rl.allow("A", t0)
	if ok {
		t.Fatal("request past the burst accepted")
	}
	if wait != 100*time.Millisecond {
		t.Fatalf("retry hint %s, want 100ms at 10/s", wait)
	}
	// Another identity has its own bucket.
	for i := range 5 {
		if ok, _ := rl.allow("B", t0); !ok {
			t.Fatalf("B's request %d refused while A is limited", i+1)
		}
	}
	// After the hinted wait one token is back, and only one.
	if ok, _ := rl.allow("A", t0.Add(wait)); !ok {
		t.Fatal("refused after the hinted wait")
	}
	if ok, _ := rl.allow("A", t0.Add(wait)); ok {
		t.Fatal("two tokens after one interval")
	}
	// A long idle time refills to the burst, not beyond.
	later := t0.Add(time.Hour)
	n := 0
	for {
		if ok, _ := rl.allow("A", later); !ok {
			break
		}
		n++
	}
	if n != 5 {
		t.Fatalf("after an hour %d requests passed, want the burst 5", n)
	}
	if newRateLimiter(-1, 5) != nil {
		t.Fatal("a negative rate must disable the limiter")
	}
}

func TestRateLimiterSweepsIdleBuckets(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	rl := newRateLimiter(1000, 1)
	for i := range maxLimiterBuckets {
		rl.allow(fmt.Sprint(i), t0)
	}
	// Two seconds later every bucket has refilled: the next new signer
	// sweeps them all.
	rl.allow("new", t0.Add(2*time.Second))
	if len(rl.buckets) != 1 {
		t.Fatalf("%d buckets after the sweep, want 1", len(rl.buckets))
	}
}
