package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/membership/subjects"
)

// Read claims: where reads claim their nonces (docs/security.md, "Read
// nonces and the nonce floor").
//
// A read's nonce must be accepted once, cluster-wide, like a mutation's;
// but a read changes nothing, so its claim need not survive a crash as long
// as a claim lost in a crash still cannot be replayed. Claims therefore go
// to a stream in memory storage (no fsync per read), and the store tells
// its caller since when the stream has remembered every claim:
//
//   - A claim is a message on the stream's claim subject whose Nats-Msg-Id
//     is a hash of the nonce key. JetStream's duplicate window (the claim
//     TTL) rejects a second message with that id, on the stream leader,
//     cluster-wide: first sight wins, as with a KV Create.
//   - The stream holds one marker message, written when the store finds
//     none, on a subject of its own with a fresh random id. Memory state is
//     lost wholesale (a standalone server restarts without it; a replicated
//     stream that lost all its replicas comes back empty under the same
//     name), and with it the marker. Markers are written only where no
//     marker exists, so finding the very marker (subject and sequence) a
//     replica adopted proves that no loss happened since it was written.
//   - A claim counts only if it was stored while that marker was the
//     stream's. On a single replica the claim's own publish says so: it
//     carries the marker's subject and sequence as its expected last
//     subject sequence, which the server checks as it stores the claim
//     (a lost marker fails the publish, and nothing is stored). On a
//     replicated stream nats-server lets one such check per subject be in
//     flight at a time (checkMsgHeadersPreClusteredProposal,
//     expectedPerSubjectInProcess), so concurrent claims would refuse one
//     another; there a claim counts once a marker check that started after
//     the claim was stored has found the marker. Checks are shared: one
//     check confirms every claim stored before it started.
//   - The marker's stored time M is the incarnation's start. Claims lost
//     with an earlier incarnation were accepted before M, for requests
//     stamped before M + skew; the caller refuses reads stamped before that
//     floor. The first incarnation of a deployment needs no floor: the
//     durable record readClaimsKey is created, in the base bucket, before
//     any marker, so an absent record means no claim was ever accepted.

// readClaimsKey is the durable record, in the base bucket, that read claims
// have existed.
const readClaimsKey = "readclaims"

// ReadSince is what the caller needs from a confirmed claim: the start of
// the incarnation the claim was stored in, and whether it is the
// deployment's first (nothing could have been lost before it).
type ReadSince struct {
	Start time.Time
	First bool
}

type incarnation struct {
	stream  jetstream.Stream
	subject string // the marker's subject
	seq     uint64 // the marker's sequence
	since   ReadSince
}

type readClaims struct {
	js      jetstream.JetStream
	st      *Store
	cfg     jetstream.StreamConfig
	claim   string // subject of claims
	markers string // marker subject prefix, "<…>.inc."
	ttl     time.Duration
	ttlHdr  string // ttl as a Nats-TTL header value

	mu  sync.Mutex // serialises ensure
	cur *incarnation

	// guarded: claims carry their marker check (a single replica; see
	// the comment at the top), else a shared check confirms them.
	guarded bool

	check checkBatcher
}

func readClaimsConfig(bucket string, replicas int, ttl time.Duration) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        subjects.ReadClaimsStream(bucket),
		Description: "unibus membership: read nonce claims (memory; see docs/security.md)",
		Subjects:    []string{subjects.ReadClaims(bucket)},
		Storage:     jetstream.MemoryStorage,
		Replicas:    replicas,
		Duplicates:  ttl,
		AllowMsgTTL: true,
		Discard:     jetstream.DiscardOld,
		AllowDirect: directGets(replicas),
	}
}

func openReadClaims(ctx context.Context, js jetstream.JetStream, st *Store, cfg Config) (*readClaims, error) {
	ttl := max(cfg.MaxTTL, time.Second)
	rc := &readClaims{
		js: js, st: st, ttl: ttl, ttlHdr: strconv.FormatInt(int64(ttl/time.Second), 10) + "s",
		cfg:     readClaimsConfig(cfg.Bucket, cfg.Replicas, ttl),
		claim:   subjects.ReadClaim(cfg.Bucket),
		markers: subjects.ReadIncarnations(cfg.Bucket),
		guarded: cfg.Replicas <= 1,
	}
	rc.check.run = rc.checkMarker
	if _, err := rc.ensure(ctx, nil); err != nil {
		return nil, err
	}
	return rc, nil
}

// stream binds to the claims stream, creating it if it is missing (at the
// first start, or after a standalone server lost it in a restart).
func (rc *readClaims) stream(ctx context.Context) (jetstream.Stream, error) {
	s, err := rc.js.Stream(ctx, rc.cfg.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = rc.js.CreateStream(ctx, rc.cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			s, err = rc.js.Stream(ctx, rc.cfg.Name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("read claims stream %s: %w", rc.cfg.Name, err)
	}
	sc := s.CachedInfo().Config
	if sc.Replicas != rc.cfg.Replicas || sc.Storage != jetstream.MemoryStorage {
		return nil, fmt.Errorf("%w: stream %s has %d replicas and %s storage; want %d and memory",
			ErrBucketConfig, rc.cfg.Name, sc.Replicas, sc.Storage, rc.cfg.Replicas)
	}
	if sc.Duplicates < rc.ttl || !sc.AllowMsgTTL {
		// A larger skew needs a longer duplicate window: widening it
		// forgets nothing.
		sc.Duplicates, sc.AllowMsgTTL = max(sc.Duplicates, rc.ttl), true
		if s, err = rc.js.UpdateStream(ctx, sc); err != nil {
			return nil, fmt.Errorf("read claims stream %s: widen the duplicate window: %w", rc.cfg.Name, err)
		}
	}
	return s, nil
}

// ensure returns the current incarnation, adopting the stream's marker or
// writing one where there is none. stale is the incarnation a caller found
// gone; nil means "whatever is current".
func (rc *readClaims) ensure(ctx context.Context, stale *incarnation) (*incarnation, error) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.cur != nil && rc.cur != stale {
		return rc.cur, nil
	}
	rc.cur = nil
	for attempt := 0; attempt < 5; attempt++ {
		s, err := rc.stream(ctx)
		if err != nil {
			return nil, err
		}
		if inc, err := rc.adopt(ctx, s); err != nil || inc != nil {
			rc.cur = inc
			return inc, err
		}
		// No marker: this is a new incarnation. Record durably that read
		// claims exist before writing the marker (see the package comment).
		first := false
		if err := rc.st.Create(ctx, readClaimsKey, []byte("1"), 0); err == nil {
			first = true
		} else if !errors.Is(err, ErrExists) {
			return nil, fmt.Errorf("read claims record: %w", err)
		}
		id := make([]byte, 12)
		_, _ = rand.Read(id)
		m := nats.NewMsg(rc.markers + hex.EncodeToString(id))
		if first {
			m.Data = []byte("first")
		}
		// Only where no marker exists: of two replicas that found none,
		// one writes it and the other adopts it on the next round.
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
		m.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, rc.markers+">")
		if _, err := rc.js.PublishMsg(ctx, m); err != nil && !isWrongLastSeq(err) {
			return nil, fmt.Errorf("read claims marker: %w", err)
		}
	}
	return nil, errors.New("read claims marker: no stable marker after 5 attempts")
}

// adopt reads the stream's marker; nil if there is none.
func (rc *readClaims) adopt(ctx context.Context, s jetstream.Stream) (*incarnation, error) {
	m, err := s.GetLastMsgForSubject(ctx, rc.markers+">")
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read claims marker: %w", err)
	}
	return &incarnation{stream: s, subject: m.Subject, seq: m.Sequence,
		since: ReadSince{Start: m.Time, First: string(m.Data) == "first"}}, nil
}

// checkMarker confirms that inc's marker is still there (a leader read, or a
// direct get from the only replica).
func (rc *readClaims) checkMarker(ctx context.Context, inc *incarnation) (bool, error) {
	m, err := retryLost(ctx, func(ctx context.Context) (*jetstream.RawStreamMsg, error) {
		return inc.stream.GetLastMsgForSubject(ctx, inc.subject)
	})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return m.Sequence == inc.seq, nil
}

// ErrReadClaimsLost reports that the read-claims stream lost its state
// between a claim and its confirmation: the claim proves nothing. Nothing
// was accepted; a retry claims in the new incarnation.
var ErrReadClaimsLost = errors.New("store: read claims were lost; retry")

// ClaimRead claims key for a read: the first claim of a key within the
// claim TTL wins, cluster-wide; a later one gets [ErrExists]. On success it
// returns the incarnation the claim was confirmed in; the caller must refuse
// requests that could have been claimed in an earlier one (see ReadSince).
func (s *Store) ClaimRead(ctx context.Context, key string) (ReadSince, error) {
	rc := s.reads
	var stale *incarnation
	for attempt := 0; ; attempt++ {
		inc, err := rc.ensure(ctx, stale)
		if err != nil {
			return ReadSince{}, err
		}
		err = rc.publish(ctx, key, inc)
		if attempt == 0 && (errors.Is(err, jetstream.ErrNoStreamResponse) || (rc.guarded && isWrongLastSeq(err))) {
			// The stream is gone (a standalone server restarted) or its
			// marker is: nothing was stored, claim in the current one.
			stale = inc
			continue
		}
		if err != nil {
			return ReadSince{}, err
		}
		if rc.guarded {
			return inc.since, nil
		}
		ok, err := rc.check.confirm(ctx, inc)
		if err != nil {
			return ReadSince{}, err
		}
		if !ok {
			rc.ensure(ctx, inc) // adopt or write the next marker for later claims
			return ReadSince{}, ErrReadClaimsLost
		}
		return inc.since, nil
	}
}

// ReadSince is the current incarnation as far as this replica knows, for a
// cheap check before claiming; ok is false before any is known.
func (s *Store) ReadSince() (since ReadSince, ok bool) {
	s.reads.mu.Lock()
	defer s.reads.mu.Unlock()
	if s.reads.cur == nil {
		return ReadSince{}, false
	}
	return s.reads.cur.since, true
}

func (rc *readClaims) publish(ctx context.Context, key string, inc *incarnation) error {
	sum := sha256.Sum256([]byte(key))
	m := nats.NewMsg(rc.claim)
	m.Header.Set(jetstream.MsgIDHeader, base64.RawURLEncoding.EncodeToString(sum[:]))
	m.Header.Set(jetstream.MsgTTLHeader, rc.ttlHdr)
	if rc.guarded { // stored only while inc's marker is the stream's
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(inc.seq, 10))
		m.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, inc.subject)
	}
	bctx, cancel := boundWrite(ctx) // not resent: a resend would find its own claim
	defer cancel()
	ack, err := rc.js.PublishMsg(bctx, m)
	var apiErr *jetstream.APIError
	switch {
	case err == nil && ack.Duplicate:
		return ErrExists
	case errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeDuplicateInProcess:
		return ErrExists // the same id is being stored right now
	}
	return err
}

// errCodeDuplicateInProcess is nats-server's JSStreamDuplicateMessageConflict
// ("duplicate message id is in process"), which nats.go does not name.
const errCodeDuplicateInProcess jetstream.ErrorCode = 10158

func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// checkBatcher shares marker checks between claims: a claim waits for the
// next check to start after it registered, and one check answers every
// claim waiting for it. Under load there is one check in flight, confirming
// all claims stored while the previous one ran.
type checkBatcher struct {
	run func(ctx context.Context, inc *incarnation) (bool, error)

	mu      sync.Mutex
	running bool
	waiting map[*incarnation][]chan checkResult
}

type checkResult struct {
	ok  bool
	err error
}

func (b *checkBatcher) confirm(ctx context.Context, inc *incarnation) (bool, error) {
	ch := make(chan checkResult, 1)
	b.mu.Lock()
	if b.waiting == nil {
		b.waiting = map[*incarnation][]chan checkResult{}
	}
	b.waiting[inc] = append(b.waiting[inc], ch)
	if !b.running {
		b.running = true
		go b.loop()
	}
	b.mu.Unlock()
	select {
	case r := <-ch:
		return r.ok, r.err
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// loop runs checks until nobody waits. Each round takes the waiters
// registered so far, so every check starts after its waiters registered.
func (b *checkBatcher) loop() {
	for {
		b.mu.Lock()
		round := b.waiting
		b.waiting = nil
		if len(round) == 0 {
			b.running = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		for inc, chans := range round {
			ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
			ok, err := b.run(ctx, inc)
			cancel()
			for _, ch := range chans {
				ch <- checkResult{ok, err}
			}
		}
	}
}

const checkTimeout = 5 * time.Second

// ReadClaims counts the read claims the stream holds: those of the last
// claim TTL, in the current incarnation.
func (s *Store) ReadClaims(ctx context.Context) (int, error) {
	st, err := s.reads.stream(ctx)
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(s.reads.claim))
	if err != nil {
		return 0, err
	}
	return int(info.State.Subjects[s.reads.claim]), nil
}
