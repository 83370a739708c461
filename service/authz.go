package service

import (
	"context"
	"fmt"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/subjects"
)

// Authorization, in one place: who may do what. Every operation has one
// rule (ruleOf). The pipeline checks the signer's part of it before the
// operation plans or reads anything (authorize); an operation on a room
// loads the room through roomFor, which applies the room's part once the
// body has named the room: membership (H3) or ownership (H6). The room
// rules read the room's records from the store, never the room index: a
// membership removed is gone on the next request, on every replica. The
// signer's identity (admin, disabled) is the one verify found, through the
// identity cache within Config.IdentityMaxStale (cache.go).

// rule is what an operation requires of its signer.
type rule int

const (
	ruleSigner rule = iota + 1 // any active, registered identity
	ruleAdmin                  // an active admin
	ruleMember                 // a member of the room the request names (H3)
	ruleOwner                  // the owner of the room the request names (H6)
)

// ruleOf is the rule of op; 0 for an operation without one, which
// authorize refuses (a new operation is closed until it is given a rule).
func ruleOf(op subjects.Op) rule {
	switch op {
	case subjects.OpIdentityGet, subjects.OpWhoami, subjects.OpRoomCreate, subjects.OpRoomLeave, subjects.OpRoomMine:
		return ruleSigner
	case subjects.OpIdentityRegister, subjects.OpIdentityDisable, subjects.OpIdentityEnable,
		subjects.OpIdentityList, subjects.OpIdentityAudit:
		return ruleAdmin
	case subjects.OpRoomGet, subjects.OpRoomMembers, subjects.OpRoomKey, subjects.OpRoomAudit:
		return ruleMember
	case subjects.OpRoomAdd, subjects.OpRoomRemove, subjects.OpRoomRekey, subjects.OpRoomDelete:
		return ruleOwner
	}
	return 0
}

// authorize checks the signer's part of c's rule, before the operation
// runs: a signer, or an admin. The room rules need the room the body
// names, so they wait for roomFor.
func (s *Service) authorize(c *call) error {
	switch ruleOf(c.op) {
	case ruleSigner:
		_, err := c.requireSigner()
		return err
	case ruleAdmin:
		_, err := c.requireAdmin()
		return err
	case ruleMember, ruleOwner:
		return nil
	}
	return s.internal(c, "authorize", fmt.Errorf("operation %s has no rule", c.op))
}

// roomFor loads roomID for c's operation under its room rule: a room the
// signer is a member of (with its membership) or one it owns.
func (s *Service) roomFor(ctx context.Context, c *call, roomID string) (*api.Room, uint64, *memberRecord, error) {
	switch ruleOf(c.op) {
	case ruleMember:
		return s.memberRoom(ctx, c, roomID)
	case ruleOwner:
		r, rev, err := s.ownedRoom(ctx, c, roomID)
		return r, rev, nil, err
	}
	return nil, 0, nil, s.internal(c, "authorize", fmt.Errorf("operation %s names no room rule", c.op))
}

// authorizedRead runs read once c passed authorize.
func (s *Service) authorizedRead(ctx context.Context, c *call, read readFunc) (any, error) {
	if err := s.authorize(c); err != nil {
		return nil, err
	}
	return read(ctx, c)
}

// plan plans c's mutation once c passed authorize. A plan runs after the
// nonce check, so a copy of a mutation that committed learns its outcome
// (208) even if its signer lost the right since.
func (s *Service) plan(ctx context.Context, c *call, mutate mutateFunc) (*mutation, error) {
	if err := s.authorize(c); err != nil {
		return nil, err
	}
	return mutate(ctx, c)
}

// requireSigner returns the verified signer or a 401 for requests that have
// none (soft or off mode).
func (c *call) requireSigner() (*api.Identity, error) {
	if c.signer == nil {
		return nil, api.E(api.KindUnauthenticated, "operation %s requires a signed request from a registered identity", c.op)
	}
	return c.signer, nil
}

func (c *call) requireAdmin() (*api.Identity, error) {
	id, err := c.requireSigner()
	if err != nil {
		return nil, err
	}
	if !id.Admin {
		return nil, api.E(api.KindForbidden, "operation %s is for admins", c.op)
	}
	return id, nil
}

// memberRoom loads a room the signer is a member of, with the room record's
// revision: 403 for anyone else (H3: being registered is not enough to read
// a room).
func (s *Service) memberRoom(ctx context.Context, c *call, roomID string) (*api.Room, uint64, *memberRecord, error) {
	me, err := c.requireSigner()
	if err != nil {
		return nil, 0, nil, err
	}
	if err := api.ValidateID("room", roomID); err != nil {
		return nil, 0, nil, err
	}
	// Both records in one store request (prefetch.go), each still read
	// from the store; the room's answer (404) comes first.
	s.prefetchJoint(ctx, c, keyRoom(roomID), keyMember(roomID, me.Endpoint))
	r, rev, err := s.room(ctx, c, roomID)
	if err != nil {
		return nil, 0, nil, err
	}
	m, _, err := s.member(ctx, c, roomID, me.Endpoint)
	if err != nil {
		return nil, 0, nil, err
	}
	if m == nil {
		return nil, 0, nil, api.E(api.KindForbidden, "only members of room %s may read it", roomID)
	}
	return r, rev, m, nil
}

// ownedRoom loads a room the signer owns (H6): the signer's endpoint is
// the room's owner, which createRoom set from the verified signer, never
// from the body. The check compares endpoints only: the signing key that
// created the room (OwnerKey) is recorded, not required, so an owner whose
// key an admin replaced keeps its rooms.
func (s *Service) ownedRoom(ctx context.Context, c *call, roomID string) (*api.Room, uint64, error) {
	me, err := c.requireSigner()
	if err != nil {
		return nil, 0, err
	}
	r, rev, err := s.room(ctx, c, roomID)
	if err != nil {
		return nil, 0, err
	}
	if r.Owner != me.Endpoint {
		return nil, 0, api.E(api.KindForbidden, "only the owner of room %s may do this", roomID)
	}
	return r, rev, nil
}

// checkKeyEpoch lets a member fetch the key of an epoch at which it was a
// member (H3): from its join epoch on. A later member cannot read what was
// said before it joined.
func checkKeyEpoch(c *call, r *api.Room, m *memberRecord, epoch uint64) error {
	if epoch < m.Since {
		return api.E(api.KindForbidden, "%s was not a member of room %s at epoch %d", c.signer.Endpoint, r.ID, epoch)
	}
	return nil
}
