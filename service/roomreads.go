package service

import (
	"context"
	"fmt"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/unibus/membership/api"
)

// The room reads: a room's record, its members, the caller's own sealed
// key and the caller's own rooms. Each names a room the caller must be a
// member of (roomFor, authz.go), except the caller's own rooms, which come
// from its own directory. Member and room pages come from the room index
// when it is current enough (roomindex.go), else from the store.

// getRoom serves a room's record to its members.
func (s *Service) getRoom(ctx context.Context, c *call) (any, error) {
	var req api.RoomRequest
	if err := c.body(&req); err != nil {
		return nil, err
	}
	r, _, _, err := s.roomFor(ctx, c, req.Room)
	return r, err
}

// roomMembers lists members with their public keys, to members only.
func (s *Service) roomMembers(ctx context.Context, c *call) (any, error) {
	var req api.MembersRequest
	if err := c.body(&req); err != nil {
		return nil, err
	}
	r, rev, _, err := s.roomFor(ctx, c, req.Room)
	if err != nil {
		return nil, err
	}
	limit, err := pageArgs(req.After, req.Limit)
	if err != nil {
		return nil, err
	}
	var members []indexedMember
	var next string
	ok := s.fromIndex(c, func() (ok bool) {
		members, next, ok = s.index.members(r.ID, rev, req.After, limit) // as current as r (roomindex.go)
		return ok
	})
	if !ok {
		if members, next, err = s.storedMembers(ctx, c, r.ID, req.After, limit); err != nil {
			return nil, err
		}
	}
	out := &api.MembersPage{Members: make([]api.Member, 0, len(members)), Next: next}
	for _, m := range members {
		id, err := s.publicKeys(ctx, c, m.endpoint)
		if err != nil {
			return nil, err
		}
		if id == nil {
			continue // unregistered since: no keys to give
		}
		out.Members = append(out.Members, api.Member{Endpoint: m.endpoint, SignKey: id.SignKey, XKey: id.XKey, Since: m.since})
	}
	return out, nil
}

// fromIndex runs page until the room index can answer it, again at each
// change of the index, for at most Config.RoomIndexWait (the watch is
// normally a millisecond behind), and counts where the page came from.
// false: read the store.
func (s *Service) fromIndex(c *call, page func() bool) bool {
	ok := s.index != nil && s.waitIndex(page)
	s.stats.of(c.op).page(ok)
	return ok
}

func (s *Service) waitIndex(page func() bool) bool {
	deadline := time.NewTimer(s.cfg.RoomIndexWait)
	defer deadline.Stop()
	for {
		changed := s.index.changed() // before looking: no change is missed
		if page() {
			return true
		}
		select {
		case <-changed:
		case <-deadline.C:
			return false
		}
	}
}

// storedMembers reads a page of members from the store.
func (s *Service) storedMembers(ctx context.Context, c *call, room, after string, limit int) ([]indexedMember, string, error) {
	ids, next, err := s.page(ctx, c, prefixMembers(room), after, limit)
	if err != nil {
		return nil, "", err
	}
	keys := make([]string, len(ids))
	for i, e := range ids {
		keys[i] = keyMember(room, e)
	}
	if len(keys) > 0 {
		s.prefetchJoint(ctx, c, keys...) // the page's records in one store request (prefetch.go)
	}
	out := make([]indexedMember, 0, len(ids))
	for _, e := range ids {
		m, _, err := s.member(ctx, c, room, e)
		if err != nil {
			return nil, "", err
		}
		if m != nil { // nil: removed while we listed
			out = append(out, indexedMember{e, m.Since})
		}
	}
	return out, next, nil
}

// roomKey serves the caller's own sealed key, only for an epoch at which it
// was a member (H3): from its join epoch up to the current one.
func (s *Service) roomKey(ctx context.Context, c *call) (any, error) {
	var req api.KeyRequest
	if err := c.body(&req); err != nil {
		return nil, err
	}
	r, _, m, err := s.roomFor(ctx, c, req.Room)
	if err != nil {
		return nil, err
	}
	epoch := req.Epoch
	if epoch == 0 {
		epoch = r.Epoch
	}
	if epoch > r.Epoch {
		return nil, api.E(api.KindNotFound, "room %s has no epoch %d yet", r.ID, epoch)
	}
	if err := checkKeyEpoch(c, r, m, epoch); err != nil {
		return nil, err
	}
	if m.KeyEpoch == epoch {
		sealed, err := s.object(ctx, c, m.KeyObject)
		if err != nil {
			return nil, err
		}
		return &api.KeyReply{Room: r.ID, Epoch: epoch, Sealer: m.Sealer, Sealed: sealed}, nil
	}
	var ep epochRecord
	if _, ok, err := s.get(ctx, c, keyEpoch(r.ID, epoch), &ep); err != nil {
		return nil, err
	} else if !ok {
		return nil, s.internal(c, "room key", fmt.Errorf("epoch record %d missing", epoch))
	}
	data, err := s.object(ctx, c, ep.Object)
	if err != nil {
		return nil, err
	}
	var b bundle
	if err := msgpack.Unmarshal(data, &b); err != nil {
		return nil, s.internal(c, "decode bundle", err)
	}
	sealed, ok := b.Keys[c.signer.Endpoint]
	if !ok {
		return nil, api.E(api.KindNotFound, "no key sealed to %s at epoch %d", c.signer.Endpoint, epoch)
	}
	return &api.KeyReply{Room: r.ID, Epoch: epoch, Sealer: ep.Sealer, Sealed: sealed}, nil
}

func (s *Service) object(ctx context.Context, c *call, name string) ([]byte, error) {
	b, err := s.cachedObject(ctx, name) // immutable: cached (cache.go)
	if err != nil {
		return nil, s.storeErr(c, "get sealed key", err)
	}
	return b, nil
}

// myRooms lists the caller's own rooms (H3: only its own directory).
func (s *Service) myRooms(ctx context.Context, c *call) (any, error) {
	me := c.signer // authorized (authz.go)
	var req api.PageRequest
	if err := c.body(&req); err != nil {
		return nil, err
	}
	limit, err := pageArgs(req.After, req.Limit)
	if err != nil {
		return nil, err
	}
	var rooms []api.Room
	var next string
	ok := false
	if s.index != nil {
		// As current as the store when the request arrived (roomindex.go).
		seq, err := s.lastSeqs(ctx) // every shard's (bus.go)
		if err != nil {
			return nil, s.storeErr(c, "last revision", err)
		}
		ok = s.fromIndex(c, func() (ok bool) {
			rooms, next, ok = s.index.roomsOf(me.Endpoint, seq, req.After, limit)
			return ok
		})
	}
	if !ok {
		if rooms, next, err = s.storedRooms(ctx, c, me.Endpoint, req.After, limit); err != nil {
			return nil, err
		}
	}
	return &api.RoomPage{Rooms: rooms, Next: next}, nil
}

// storedRooms reads a page of endpoint's live rooms from the store.
func (s *Service) storedRooms(ctx context.Context, c *call, endpoint, after string, limit int) ([]api.Room, string, error) {
	ids, next, err := s.page(ctx, c, prefixEpRooms(endpoint), after, limit)
	if err != nil {
		return nil, "", err
	}
	rooms := make([]api.Room, 0, len(ids))
	for _, id := range ids {
		var r api.Room
		if _, ok, err := s.get(ctx, c, keyRoom(id), &r); err != nil {
			return nil, "", err
		} else if ok && !r.Deleted {
			rooms = append(rooms, r)
		}
	}
	return rooms, next, nil
}
