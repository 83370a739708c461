package service

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/micro"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/envelope"
	"github.com/unibus/membership/store"
	"github.com/unibus/membership/subjects"
)

// call is one request as it moves through the pipeline.
type call struct {
	op      subjects.Op
	mutates bool
	subject string
	raw     []byte // the request as received: binds the reply when no nonce was read (respsign.go)
	env     *envelope.Envelope
	signer  *api.Identity // nil when the request has no verified signer
	digest  [32]byte
	nonce   string                      // nonce key
	shard   atomic.Pointer[store.Shard] // a mutation's shard, once known (shards.go)
	pre     prefetches                  // reads in flight for its plan (prefetch.go)
	now     time.Time

	afterReply func() // the caller's own revocation, once it has its answer (bus.go)
}

// body decodes the request body strictly into v.
func (c *call) body(v any) error {
	if c.env == nil {
		return api.E(api.KindInvalid, "no envelope")
	}
	if err := envelope.Unmarshal(c.env.Body, v); err != nil {
		return api.E(api.KindInvalid, "body: %v", err)
	}
	return nil
}

// readFunc serves a read; it claims nothing.
type readFunc func(ctx context.Context, c *call) (any, error)

// mutation is what a mutating operation wants committed.
type mutation struct {
	reply   any
	audit   auditTarget // what its audit entry names (audit.go)
	writes  []store.Write
	objects []string // written before the batch; removed if it fails
	after   func()   // best-effort clean-up once the batch committed
}

// mutateFunc plans a mutation from current state. It may be run again when
// a concurrent change wins the compare-and-set.
type mutateFunc func(ctx context.Context, c *call) (*mutation, error)

// maxConflictRetries bounds how often a mutation is re-planned after losing a
// compare-and-set to an applied write before the caller sees 409. Losing to
// a write that is not applied yet does not count: see runMutation.
const maxConflictRetries = 4

// handler adapts one operation to micro.
func (s *Service) handler(op subjects.Op, read readFunc, mutate mutateFunc) micro.Handler {
	return micro.HandlerFunc(func(req micro.Request) {
		s.active.Add(1)
		s.started.Add(1)
		defer s.active.Add(-1)
		start := time.Now()
		ctx, cancel := context.WithTimeout(s.conn.current(), s.cfg.RequestTimeout)
		defer cancel()
		c := &call{op: op, subject: req.Subject(), raw: req.Data(), now: start, mutates: mutate != nil}
		reply, err := s.serve(ctx, c, req.Data(), read, mutate)
		s.respond(req, c, reply, err, start)
		if c.afterReply != nil {
			c.afterReply()
		}
	})
}

// serve runs the pipeline and the operation. reply is the encoded body.
func (s *Service) serve(ctx context.Context, c *call, data []byte, read readFunc, mutate mutateFunc) ([]byte, error) {
	if err := s.authenticate(ctx, c, data); err != nil {
		return nil, err
	}
	if err := s.rateLimit(c); err != nil {
		return nil, err
	}
	if mutate != nil {
		return s.runMutation(ctx, c, mutate)
	}
	if c.signer == nil {
		return encodeRead(s.authorizedRead(ctx, c, read))
	}
	// The nonce claim and the read run at once: the read has no side
	// effects and its result is only sent if the claim won, so this
	// changes what a request costs in latency (one store round trip
	// instead of three), not what is accepted.
	claimed := make(chan error, 1)
	go func() { claimed <- s.checkNonce(ctx, c) }()
	out, err := s.authorizedRead(ctx, c, read)
	if cerr := <-claimed; cerr != nil {
		return nil, cerr
	}
	return encodeRead(out, err)
}

func encodeRead(out any, err error) ([]byte, error) {
	if err != nil {
		return nil, err
	}
	return msgpack.Marshal(out)
}

// authenticate runs steps 1–5 and prepares step 6 (the nonce key).
func (s *Service) authenticate(ctx context.Context, c *call, data []byte) error {
	if len(data) > s.cfg.MaxRequest {
		return refuse(reasonTooLarge, api.KindTooLarge, "request of %d bytes is larger than %d", len(data), s.cfg.MaxRequest)
	}
	env, err := envelope.Decode(data)
	if errors.Is(err, envelope.ErrUnsigned) {
		return refuse(reasonUnsigned, api.KindUnauthenticated, "unsigned request: send a signed envelope (docs/protocol.md)")
	}
	if err != nil {
		// Without an envelope there is no body to serve, in any mode.
		return refuse(reasonMalformed, api.KindInvalid, "envelope: %v", err)
	}
	c.env = env
	if s.cfg.Auth == AuthOff {
		return nil
	}
	err = s.verify(ctx, c)
	if err != nil && s.cfg.Auth == AuthSoft {
		s.cfg.Logger.Info("request rejected (soft mode: let through unsigned)",
			"op", c.op, "reason", reasonOf(err), "error", err)
		c.signer = nil
		return nil
	}
	return err
}

// verify checks time, body hash, signature and signer, and computes the
// nonce key. Only an active signer gets this far: no nonce is ever written
// for a key that is not registered (H7).
func (s *Service) verify(ctx context.Context, c *call) error {
	e := c.env
	// One call checks the envelope: time window, body hash, then the
	// replay cache (a claimed nonce is refused before the costly checks),
	// then the signature.
	digest, err := e.Check(c.subject, c.now, s.cfg.Skew, func(digest [32]byte) error {
		return s.checkReplayCache(c, digest)
	})
	if err != nil {
		return s.envelopeErr(err)
	}
	id, err := s.identityBySigner(ctx, c, e.Signer)
	if err != nil {
		return err
	}
	if id == nil {
		return refuse(reasonUnknownSigner, api.KindUnauthenticated, "unknown signer")
	}
	if id.Disabled {
		return refuse(reasonDisabled, api.KindForbidden, "identity %s is disabled", id.Endpoint)
	}
	c.signer = id
	c.digest = digest
	c.nonce = keyNonce(e.Signer, e.Nonce)
	return nil
}

// envelopeErr words a failed envelope check in the service's terms; the
// replay cache's own rejection passes as it is.
func (s *Service) envelopeErr(err error) error {
	var r *rejection
	switch {
	case errors.As(err, &r):
		return r
	case errors.Is(err, envelope.ErrStale):
		return refuse(reasonStale, api.KindUnauthenticated, "stale request: ts outside ±%s of the service clock", s.cfg.Skew)
	case errors.Is(err, envelope.ErrBodyHash):
		return refuse(reasonBodyHash, api.KindInvalid, "body_hash does not match body")
	}
	return refuse(reasonBadSignature, api.KindUnauthenticated, "bad signature")
}

// runMutation checks the nonce, plans, writes and commits, re-planning when
// a concurrent change wins.
func (s *Service) runMutation(ctx context.Context, c *call, mutate mutateFunc) ([]byte, error) {
	if c.signer == nil {
		_, err := c.requireSigner()
		return nil, err
	}
	// With more than one shard a room operation's nonce is in its room's
	// shard, known once the plan has read the room: it is looked up after
	// the plan then (a copy of an applied request fails its plan or its
	// commit, and both look it up).
	if s.store.RoomShards() == 1 || !roomOp(c.op) {
		if err := s.checkNonce(ctx, c); err != nil {
			return nil, err
		}
	}
	for attempt, wait := 0, inFlightBackoff; ; {
		m, err := s.plan(ctx, c, mutate)
		if err != nil {
			// A copy of this very request may have committed on another
			// replica between the nonce check above and this plan, which
			// then refuses the state that copy made (409 exists, 403 after
			// a leave, …): the nonce record, not the plan, tells the
			// outcome (e2e TestSameMutationRace).
			if k := api.KindOf(err); k != api.KindUnavailable && k != api.KindInternal {
				if aerr := s.checkNonce(ctx, c); aerr != nil {
					return nil, aerr
				}
			}
			return nil, err
		}
		// On the failures below the objects stay: see removeObjects.
		roomRecordLast(m.writes)
		aw, err := s.auditWrites(ctx, c, m) // committed in the same batch (audit.go)
		if err != nil {
			return nil, err
		}
		m.writes = append(m.writes, aw...)
		reply, err := msgpack.Marshal(m.reply)
		if err != nil {
			return nil, s.internal(c, "encode reply", err)
		}
		writes := append([]store.Write{s.nonceClaim(c, reply)}, m.writes...)
		sh, err := s.batchShard(c, m.writes) // the nonce commits where the state does (shards.go)
		if err != nil {
			return nil, s.internal(c, "shard", err)
		}
		start := time.Now()
		err = sh.Commit(ctx, writes)
		st := s.stats.of(c.op)
		st.storeLatency(time.Since(start))
		if err == nil {
			s.noteCommit(writes)
			st.add(func(e *endpointStats) { e.commits++; e.nonceClaims++ })
			s.rememberClaim(c, reply, true)
			s.revokeCommitted(ctx, c, m.writes) // bus.go
			if m.after != nil {
				m.after()
			}
			return reply, nil
		}
		if !errors.Is(err, store.ErrConflict) {
			// The batch may or may not have committed (a timeout hides
			// it): keep the objects, the sweep removes orphans; the
			// client resends the same request and learns the outcome.
			return nil, s.storeErr(c, "commit", err)
		}
		st.add(func(e *endpointStats) { e.conflicts++ })
		// The nonce key or a state key moved. If the nonce was claimed,
		// this request (or another with its nonce) won.
		if aerr := s.checkNonce(ctx, c); aerr != nil {
			// Only another request's nonce frees the objects: when this
			// very request applied, they are in use.
			if api.KindOf(aerr) == api.KindReplay {
				s.removeObjects(c, m.objects)
			}
			return nil, aerr
		}
		if errors.Is(err, store.ErrInFlight) {
			// The write that won is proposed but not applied yet, so the
			// nonce record above may only be missing for now: a copy of
			// this very request may be that write. Wait for it to apply
			// and look again; answering 409 here would tell a client
			// whose request committed that it did not (e2e
			// TestCopyOfInFlightMutation). Bounded by the request's
			// deadline (then 503: resend and learn the outcome).
			if err := sleepCtx(ctx, wait); err != nil {
				return nil, s.storeErr(c, "wait for an in-flight write", err)
			}
			wait = min(2*wait, maxInFlightBackoff)
			continue
		}
		// The nonce is free: a concurrent change to the state won. The
		// next plan finds its objects written already (store.PutObject).
		if attempt++; attempt >= maxConflictRetries {
			return nil, api.E(api.KindConflict, "concurrent changes to the same state; retry")
		}
	}
}

// How long a mutation that lost to an in-flight write waits before it
// looks again: a replicated stream applies a write once a quorum stored it,
// normally within milliseconds.
const (
	inFlightBackoff    = 2 * time.Millisecond
	maxInFlightBackoff = 100 * time.Millisecond
)

// sleepCtx waits d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// roomRecordLast moves the room record to the end of a mutation's state
// writes (keeping the others' order), so that a watcher that has seen it has
// seen the batch's member writes: the room index relies on this (roomindex.go).
func roomRecordLast(writes []store.Write) {
	slices.SortStableFunc(writes, func(a, b store.Write) int {
		return cmp.Compare(isRoomRecord(a.Key), isRoomRecord(b.Key))
	})
}

func isRoomRecord(key string) int {
	if strings.HasPrefix(key, famRoom) {
		return 1
	}
	return 0
}

// removeObjects removes the sealed-key objects of an attempt that cannot
// commit. Object names carry the request's digest, so every copy of one
// signed request (a client's resend, the same bytes on another replica)
// writes and references the same objects: removing them while some copy
// may still commit would leave that copy's state pointing at nothing. So
// only a nonce taken by another request — no copy can ever commit — lets
// them go; otherwise they stay, and the sweep removes them once they are
// unreferenced and older than its grace period (sweep.go).
func (s *Service) removeObjects(c *call, names []string) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
	defer cancel()
	for _, n := range names {
		if err := s.store.DeleteObject(ctx, n); err != nil {
			s.cfg.Logger.Warn("remove sealed-key object of failed mutation", "op", c.op, "object", n, "error", err)
		}
	}
}
