package callout

import (
	"sync"
	"time"
)

// Counts are the callout's counters, the custom data of its endpoint in
// nats micro stats.
type Counts struct {
	Admitted         uint64 `json:"admitted"`
	Refused          uint64 `json:"refused"`
	Malformed        uint64 `json:"malformed"`
	WouldDenyConnect uint64 `json:"would_deny_connect"` // observe mode
	WouldDenySub     uint64 `json:"would_deny_subscribe"`
	Kicked           uint64 `json:"kicked"`
	WouldKick        uint64 `json:"would_kick"` // observe mode
	RevokeErrors     uint64 `json:"revoke_errors"`
	AnswerMaxMicros  int64  `json:"answer_max_us"`
}

type counters struct {
	mu sync.Mutex
	n  Counts
}

func (c *counters) add(f func(*Counts)) {
	c.mu.Lock()
	f(&c.n)
	c.mu.Unlock()
}

func (c *counters) latency(d time.Duration) {
	c.add(func(n *Counts) { n.AnswerMaxMicros = max(n.AnswerMaxMicros, d.Microseconds()) })
}

func (c *counters) snapshot() Counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}
