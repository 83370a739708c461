package service

import (
	"context"
	"errors"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/store"
)

// Room subjects are unique: two rooms on one subject would let the members
// of one read the other's traffic, and the bus grants each member its
// rooms' subjects. subject.<sha256> names the room holding a subject.
//
// With one shard the subject key is written in the room's batch, as every
// other key of the room: a create claims it, a delete releases it,
// atomically with the room record.
//
// With more than one shard a room and its subject's key cannot share a
// batch: rooms live in their shards, and the subject index must be one for
// the whole deployment (it lives in the base bucket). So a create claims
// the subject in the base bucket first, naming the room, and then commits
// the room's batch; a delete releases the claim after its batch. A claim
// whose room never came to be (the batch failed, the replica died in
// between) or was deleted without releasing it is stale, and the next
// room that wants the subject takes it over with a compare-and-set:
//
//   - the room exists and holds another subject, or is deleted: stale at
//     once (no copy of the request that wrote the claim can commit any
//     more: the room id is taken);
//   - the room does not exist: stale once the claim is older than the nonce
//     lifetime. A copy of the creating request can be accepted only within
//     its ts window, and its nonce outlives that window, so after the nonce
//     lifetime no copy can commit and the room cannot appear any more.
//
// A claim naming the room being created is its own (an earlier attempt or
// another copy of the same request) and is kept: the room id's own
// compare-and-set then decides which create wins.

// subjectWrites checks that subject is free for room and claims it: with
// one shard by returning the write for the room's batch, with more by
// writing the claim in the base bucket now (no batch write).
func (s *Service) subjectWrites(ctx context.Context, c *call, subject, room string) ([]store.Write, error) {
	key := keySubject(subject)
	var holder string
	rev, taken, err := s.get(ctx, c, key, &holder)
	if err != nil {
		return nil, err
	}
	inBatch := s.store.Room(room) == s.store.Base()
	if taken && (inBatch || holder != room) {
		stale, err := s.staleClaim(ctx, c, key, holder, subject)
		if err != nil {
			return nil, err
		}
		if inBatch || !stale {
			return nil, api.E(api.KindExists, "subject %s belongs to another room", subject)
		}
	}
	if inBatch {
		return []store.Write{put(key, rev, room)}, nil
	}
	if taken && holder == room {
		return nil, nil
	}
	err = s.store.Base().Commit(ctx, []store.Write{put(key, rev, room)})
	if errors.Is(err, store.ErrConflict) {
		return nil, api.E(api.KindConflict, "subject %s is being claimed concurrently; retry", subject)
	}
	if err != nil {
		return nil, s.storeErr(c, "claim subject", err)
	}
	return nil, nil
}

// staleClaim reports whether the claim of subject by holder can be taken
// over (see the top of the file). With one shard no claim is ever stale:
// it commits with its room.
func (s *Service) staleClaim(ctx context.Context, c *call, key, holder, subject string) (bool, error) {
	if s.store.Room(holder) == s.store.Base() {
		return false, nil
	}
	ent, err := s.store.Room(holder).Get(ctx, keyRoom(holder))
	if err != nil {
		return false, s.storeErr(c, "get room", err)
	}
	if ent.Exists() {
		var r api.Room
		if err := msgpack.Unmarshal(ent.Value, &r); err != nil {
			return false, s.internal(c, "decode room", err)
		}
		return r.Deleted || r.Subject != subject, nil
	}
	if ent.Rev != 0 {
		return true, nil // a delete marker: no room record can be created over it
	}
	claim, err := s.store.Base().Get(ctx, key)
	if err != nil {
		return false, s.storeErr(c, "get subject", err)
	}
	return !claim.Time.IsZero() && time.Since(claim.Time) > s.cfg.NonceTTL(), nil
}

// subjectRelease plans the release of a deleted room's subject: with one
// shard a write for the room's batch, with more a step to run once the
// batch committed (failures are logged; the claim is stale anyway).
func (s *Service) subjectRelease(ctx context.Context, c *call, r *api.Room) ([]store.Write, func(), error) {
	key := keySubject(r.Subject)
	if s.store.Room(r.ID) == s.store.Base() {
		rev, _, err := s.get(ctx, c, key, new(string))
		if err != nil {
			return nil, nil, err
		}
		return []store.Write{del(key, rev)}, nil, nil
	}
	return nil, func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
		defer cancel()
		var holder string
		rev, ok, err := s.get(ctx, c, key, &holder)
		if err == nil && ok && holder == r.ID {
			err = s.store.Base().Commit(ctx, []store.Write{del(key, rev)})
		}
		if err != nil {
			s.cfg.Logger.Warn("release subject of deleted room", "op", c.op, "room", r.ID, "error", err)
		}
	}, nil
}
