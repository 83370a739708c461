package service

import (
	"bytes"
	"context"
	"errors"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/store"
)

// Nonce handling, step 6 of the pipeline (docs/protocol.md), in one place:
// a mutation claims its nonce in the same atomic batch as its state
// (nonceClaim), so the record tells whether it committed; a read claims it
// in the read-claims stream, guarded by the nonce floor; checkNonce asks
// the store for both. The replay cache answers claimed nonces from memory
// (checkReplayCache, rememberClaim). The nonce's key is spelt in records.go
// with the other key families.

// nonceRecord is the value of a claimed nonce. A mutation's record holds the
// digest of the request that claimed it and the reply it got, so the same
// signed request sent again is answered "already applied" with that reply.
type nonceRecord struct {
	Digest []byte `msgpack:"d"`
	Reply  []byte `msgpack:"r"`
}

// nonceClaim is the write that claims c's nonce in its mutation's batch,
// recording the request's digest and reply; it lives as long as a signed
// request is accepted (Config.NonceTTL).
func (s *Service) nonceClaim(c *call, reply []byte) store.Write {
	rec, _ := msgpack.Marshal(nonceRecord{Digest: c.digest[:], Reply: reply})
	return store.Write{Key: c.nonce, Value: rec, TTL: s.cfg.NonceTTL()}
}

// checkNonce is step 6: what the store says of c's nonce. A mutation's
// nonce is only looked up here, for it is claimed in the batch that commits
// the mutation (nonceClaim): a record there is either this very request's,
// which committed before (an already-applied rejection carrying the
// original reply), or another request's (replay); no record: free, nil.
// The lookup runs again whenever a plan or a commit fails (runMutation).
//
// A read's nonce is claimed here, in the read-claims stream (memory, no
// fsync; store/readclaims.go): first sight wins cluster-wide. That stream
// may lose its claims in a crash, so a read is accepted only if it is
// stamped at or after the floor of the claim's incarnation, before which
// lost claims could lie (docs/security.md, "Read nonces and the nonce
// floor"). The floor is checked before claiming too, so that a refused read
// writes nothing.
//
// Either way the replay cache learns what the store said, and any store
// error fails closed.
func (s *Service) checkNonce(ctx context.Context, c *call) error {
	if !c.mutates {
		if since, ok := s.store.ReadSince(); ok {
			if err := s.checkFloor(c, since); err != nil {
				return err
			}
		}
	}
	var (
		ent   store.Entry
		since store.ReadSince
		err   error
		start = time.Now()
	)
	if c.mutates {
		ent, err = s.nonceShard(c).Get(ctx, c.nonce) // the room's shard or the base bucket (shards.go)
	} else {
		since, err = s.store.ClaimRead(ctx, c.nonce)
		s.stats.of(c.op).storeLatency(time.Since(start))
	}
	switch {
	case !c.mutates && errors.Is(err, store.ErrExists): // a read nonce claimed before
		s.rememberClaim(c, nil, false)
		return errReplay()
	case err != nil && c.mutates:
		return s.storeErr(c, "read nonce", err)
	case err != nil:
		return s.storeErr(c, "claim nonce", err)
	case c.mutates:
		return s.appliedBefore(c, ent)
	}
	if err := s.checkFloor(c, since); err != nil {
		return err
	}
	s.stats.of(c.op).add(func(e *endpointStats) { e.nonceClaims++ })
	s.rememberClaim(c, nil, false)
	return nil
}

// appliedBefore reads a mutation's nonce entry: nil when it is free, else
// whose claim it is.
func (s *Service) appliedBefore(c *call, ent store.Entry) error {
	if !ent.Exists() {
		return nil
	}
	var rec nonceRecord
	if err := msgpack.Unmarshal(ent.Value, &rec); err == nil && len(rec.Digest) > 0 && bytes.Equal(rec.Digest, c.digest[:]) {
		s.rememberClaim(c, rec.Reply, true)
		return errApplied(rec.Reply)
	}
	s.rememberClaim(c, nil, false)
	return errReplay()
}

// checkFloor refuses a read stamped before since's floor: the start of the
// read claims' incarnation plus the skew (none for a deployment's first).
func (s *Service) checkFloor(c *call, since store.ReadSince) error {
	if since.First {
		return nil
	}
	floor := since.Start.Add(s.cfg.Skew)
	if c.env.TS >= floor.UnixMilli() {
		return nil
	}
	r := refuse(reasonNonceFloor, api.KindNonceFloor, "read stamped before the read-nonce floor (read nonces may have been lost at %s); stamp ts ≥ %d",
		since.Start.UTC().Format(time.RFC3339), floor.UnixMilli())
	r.floor = floor
	return r
}

// checkReplayCache refuses a request with digest whose signer+nonce this
// replica saw claimed. It runs after the cheap checks (time, body hash) and
// before the signature and identity checks, which cost a verification and
// store reads (envelope.Envelope.Check calls it in between).
func (s *Service) checkReplayCache(c *call, digest [32]byte) error {
	if s.replays == nil {
		return nil
	}
	hit, reply := s.replays.lookup(c.cacheKey(), digest[:], c.env.Sig, c.now)
	switch hit {
	case replayReject:
		s.replays.hits.Add(1)
		return errReplay()
	case replayApplied:
		// Byte-identical to a request this replica saw commit (same
		// digest, same signature): answer exactly what the KV record
		// would, without reading it.
		s.replays.hits.Add(1)
		return errApplied(reply)
	}
	return nil
}

// rememberClaim records c's nonce as claimed: by c itself when applied is
// true (a committed mutation and its reply), else by some request.
func (s *Service) rememberClaim(c *call, reply []byte, applied bool) {
	if s.replays == nil || c.env == nil {
		return
	}
	e := replayEntry{}
	if applied {
		e = replayEntry{digest: bytes.Clone(c.digest[:]), sig: bytes.Clone(c.env.Sig), reply: reply, applied: true}
	}
	s.replays.insert(c.cacheKey(), e, c.now)
}

// cacheKey is the call's nonce in the replay cache. Reads and mutations
// claim nonces in separate stores (docs/protocol.md §9), so the cache keeps
// them apart too: a replica answers a reuse across the two the way the
// stores would, whichever replica gets it.
func (c *call) cacheKey() string {
	k := keyNonce(c.env.Signer, c.env.Nonce)
	if !c.mutates {
		k = "read." + k
	}
	return k
}
