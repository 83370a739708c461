package service

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/subjects"
)

// Rejection reasons counted in the stats, finer than the wire's error kinds.
const (
	reasonUnsigned      = "unsigned"
	reasonMalformed     = "malformed"
	reasonTooLarge      = "too_large"
	reasonStale         = "stale"
	reasonBodyHash      = "bad_body_hash"
	reasonBadSignature  = "bad_signature"
	reasonUnknownSigner = "unknown_signer"
	reasonDisabled      = "disabled"
	reasonReplay        = "replay"
	reasonNonceFloor    = "nonce_floor"
)

// latencyWindow is how many recent store calls the percentiles cover.
const latencyWindow = 1024

// endpointStats is one endpoint's custom data in `nats micro stats`.
type endpointStats struct {
	mu             sync.Mutex
	rejections     map[string]int
	nonceClaims    int
	alreadyApplied int
	commits        int
	conflicts      int // compare-and-set lost, re-planned
	indexPages     int // pages served from the room index
	storePages     int // pages listed from the store
	latencies      []time.Duration
	next           int
}

// statsData is what an endpoint reports; field names are part of the
// operator interface (docs/operations.md).
type statsData struct {
	Rejections      map[string]int     `json:"rejections"`
	NonceClaims     int                `json:"nonce_claims"`
	AlreadyApplied  int                `json:"already_applied"`
	BatchCommits    int                `json:"batch_commits"`
	BatchConflicts  int                `json:"batch_conflicts"`
	StoreLatencyMS  map[string]float64 `json:"store_latency_ms"`
	IndexPages      int                `json:"index_pages,omitempty"`
	StorePages      int                `json:"store_pages,omitempty"`
	RoomsOwingRekey *int               `json:"rooms_owing_rekey,omitempty"`
}

func (e *endpointStats) reject(reason string) {
	e.mu.Lock()
	e.rejections[reason]++
	e.mu.Unlock()
}

func (e *endpointStats) add(f func(e *endpointStats)) {
	e.mu.Lock()
	f(e)
	e.mu.Unlock()
}

// page counts one page by where it came from.
func (e *endpointStats) page(fromIndex bool) {
	e.mu.Lock()
	if fromIndex {
		e.indexPages++
	} else {
		e.storePages++
	}
	e.mu.Unlock()
}

// storeLatency records how long one store round trip took.
func (e *endpointStats) storeLatency(d time.Duration) {
	e.mu.Lock()
	if len(e.latencies) < latencyWindow {
		e.latencies = append(e.latencies, d)
	} else {
		e.latencies[e.next] = d
		e.next = (e.next + 1) % latencyWindow
	}
	e.mu.Unlock()
}

func (e *endpointStats) snapshot() statsData {
	e.mu.Lock()
	defer e.mu.Unlock()
	d := statsData{
		Rejections: make(map[string]int, len(e.rejections)), NonceClaims: e.nonceClaims,
		AlreadyApplied: e.alreadyApplied, BatchCommits: e.commits, BatchConflicts: e.conflicts,
		IndexPages: e.indexPages, StorePages: e.storePages,
		StoreLatencyMS: map[string]float64{},
	}
	for k, v := range e.rejections {
		d.Rejections[k] = v
	}
	if len(e.latencies) > 0 {
		l := slices.Clone(e.latencies)
		slices.Sort(l)
		for _, p := range []struct {
			name string
			q    float64
		}{{"p50", 0.50}, {"p90", 0.90}, {"p99", 0.99}} {
			d.StoreLatencyMS[p.name] = float64(l[int(p.q*float64(len(l)-1))].Microseconds()) / 1000
		}
	}
	return d
}

// stats holds every endpoint's counters.
type stats struct {
	byName map[string]*endpointStats

	owedMu    sync.Mutex
	owed      int
	owedAt    time.Time
	owedKnown bool // a count has completed
	owedBusy  bool // a count is running
	countOwed func(context.Context) (int, error)
}

func newStats(countOwed func(context.Context) (int, error)) *stats {
	s := &stats{byName: map[string]*endpointStats{}, countOwed: countOwed}
	for _, o := range api.Ops {
		s.byName[o.Op.EndpointName()] = &endpointStats{rejections: map[string]int{}}
	}
	return s
}

func (s *stats) of(op subjects.Op) *endpointStats { return s.byName[op.EndpointName()] }

// owedRefresh bounds how often the rekey endpoint's stats count rooms that
// owe a rekey (a key listing).
const owedRefresh = 5 * time.Second

// handler is the micro StatsHandler: each endpoint's custom data.
func (s *stats) handler(ep *micro.Endpoint) any {
	e, ok := s.byName[ep.Name]
	if !ok {
		return nil
	}
	d := e.snapshot()
	if ep.Name == subjects.OpRoomRekey.EndpointName() {
		if n, ok := s.roomsOwingRekey(); ok {
			d.RoomsOwingRekey = &n
		}
	}
	return d
}

// roomsOwingRekey returns the last count, and starts a refresh in the
// background when it is older than owedRefresh: the stats handler must
// answer at once even when the store is slow or down.
func (s *stats) roomsOwingRekey() (int, bool) {
	s.owedMu.Lock()
	defer s.owedMu.Unlock()
	if time.Since(s.owedAt) > owedRefresh && !s.owedBusy {
		s.owedBusy = true
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			n, err := s.countOwed(ctx)
			s.owedMu.Lock()
			defer s.owedMu.Unlock()
			s.owedBusy = false
			if err == nil {
				s.owed, s.owedAt, s.owedKnown = n, time.Now(), true
			}
		}()
	}
	return s.owed, s.owedKnown
}
