package service

import (
	"math"
	"sync"
	"time"

	"github.com/unibus/membership/api"
)

// reasonRateLimited is the stats' rejection reason for a 429.
const reasonRateLimited = "rate_limited"

// rateLimiter is a token bucket per signer. It runs after the signer is
// known to be an active identity and before its nonce is claimed: a
// registered peer that floods the service gets 429 without costing a KV
// write, and its buckets are its own, so it cannot starve another identity.
// Unregistered keys never reach it (they are refused at step 5), so they
// cannot grow its map either.
type rateLimiter struct {
	rate  float64 // tokens per second
	burst float64

	mu      sync.Mutex
	buckets map[string]*tokenBucket
	swept   time.Time
}

type tokenBucket struct {
	tokens float64
	last   time.Time
}

// maxLimiterBuckets bounds the limiter's memory; past it, buckets that have
// refilled completely (and so hold no information) are dropped.
const maxLimiterBuckets = 100000

func newRateLimiter(rate float64, burst int) *rateLimiter {
	if rate <= 0 {
		return nil
	}
	return &rateLimiter{rate: rate, burst: float64(burst), buckets: make(map[string]*tokenBucket)}
}

// allow takes one token from signer's bucket. When none is left it returns
// false and how long until one is.
func (rl *rateLimiter) allow(signer string, now time.Time) (bool, time.Duration) {
	if rl == nil {
		return true, 0
	}
	rl.mu.Lock()
	defer rl.mu.Unlock()
	b, ok := rl.buckets[signer]
	if !ok {
		if len(rl.buckets) >= maxLimiterBuckets {
			rl.sweepLocked(now)
		}
		b = &tokenBucket{tokens: rl.burst, last: now}
		rl.buckets[signer] = b
	}
	if el := now.Sub(b.last); el > 0 {
		b.tokens = math.Min(rl.burst, b.tokens+el.Seconds()*rl.rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration(math.Ceil((1 - b.tokens) / rl.rate * float64(time.Second)))
	return false, max(wait, time.Millisecond)
}

// sweepLocked drops full buckets: a signer idle long enough to refill has
// the same state as one never seen. Runs at most once a second, so a map
// full of active signers costs one scan per second, not one per request.
func (rl *rateLimiter) sweepLocked(now time.Time) {
	if now.Sub(rl.swept) < time.Second {
		return
	}
	rl.swept = now
	for k, b := range rl.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*rl.rate >= rl.burst {
			delete(rl.buckets, k)
		}
	}
}

// rateLimit takes a token for c's signer; requests without a verified
// signer (soft or off mode) are not limited here.
func (s *Service) rateLimit(c *call) error {
	if s.limiter == nil || c.signer == nil {
		return nil
	}
	ok, wait := s.limiter.allow(c.signer.SignKey, time.Now())
	if ok {
		return nil
	}
	r := refuse(reasonRateLimited, api.KindRateLimited, "too many requests from this identity; retry after %d ms", wait.Milliseconds())
	r.retryAfter = wait
	return r
}
