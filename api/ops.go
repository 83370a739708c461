package api

import "github.com/unibus/membership/subjects"

// OpSpec is one row of the operation table [Ops].
type OpSpec struct {
	// Op names the operation; it is also its subject's last tokens
	// (<prefix>.<Op>, [subjects.Subject]).
	Op subjects.Op
	// Mutates is true for an operation that commits state. Its nonce is
	// durable, so the client resends a mutation as the same signed bytes
	// and a copy of an applied one answers 208 with the original outcome;
	// a read claims its nonce on first sight and is signed afresh on every
	// attempt (docs/protocol.md §9).
	Mutates bool
	// Request and Reply are zero values of the operation's body types.
	Request, Reply any
	// Description is the endpoint's description in `nats micro info`.
	Description string
}

// Ops is the operation table of protocol v1, in the order the service
// registers the endpoints. The service binds a handler to each row (a
// mutation where Mutates, a read otherwise), publishes Mutates and the body
// types in its endpoint metadata, and the client reads Mutates to decide how
// it resends. Do not modify it.
var Ops = []OpSpec{
	{subjects.OpIdentityRegister, true, RegisterRequest{}, Identity{}, "Register an identity or replace its keys (admin)"},
	{subjects.OpIdentityDisable, true, EndpointRequest{}, Identity{}, "Disable an identity (admin)"},
	{subjects.OpIdentityEnable, true, EndpointRequest{}, Identity{}, "Enable a disabled identity (admin)"},
	{subjects.OpIdentityGet, false, EndpointRequest{}, PublicKeys{}, "Public keys of one endpoint (any active identity)"},
	{subjects.OpIdentityList, false, PageRequest{}, IdentityPage{}, "List identities, paginated (admin)"},
	{subjects.OpWhoami, false, Empty{}, Identity{}, "The caller's own identity"},
	{subjects.OpRoomCreate, true, CreateRoomRequest{}, Room{}, "Create a room owned by the signer"},
	{subjects.OpRoomGet, false, RoomRequest{}, Room{}, "A room's record (members only)"},
	{subjects.OpRoomMembers, false, MembersRequest{}, MembersPage{}, "A room's members with public keys, paginated (members only)"},
	{subjects.OpRoomKey, false, KeyRequest{}, KeyReply{}, "The caller's own sealed room key for an epoch (members only)"},
	{subjects.OpRoomAdd, true, AddMemberRequest{}, Room{}, "Add a member with its sealed key (owner)"},
	{subjects.OpRoomRemove, true, RemoveMemberRequest{}, Room{}, "Remove a member (owner); a rekey is then owed"},
	{subjects.OpRoomLeave, true, RoomRequest{}, Room{}, "Leave a room (self); a rekey is then owed"},
	{subjects.OpRoomRekey, true, RekeyRequest{}, Room{}, "Move a room to a new epoch with one sealed key per member (owner)"},
	{subjects.OpRoomDelete, true, RoomRequest{}, Room{}, "Delete a room (owner)"},
	{subjects.OpRoomMine, false, PageRequest{}, RoomPage{}, "The caller's own rooms, paginated"},
	{subjects.OpRoomAudit, false, AuditRequest{}, AuditPage{}, "A room's signed, hash-chained audit trail, paginated (members only)"},
	{subjects.OpIdentityAudit, false, IdentityAuditRequest{}, AuditPage{}, "The identity registry's signed, hash-chained audit trail, paginated (admin)"},
}

// opIndex finds a row of [Ops] by its op.
var opIndex = func() map[subjects.Op]int {
	m := make(map[subjects.Op]int, len(Ops))
	for i, o := range Ops {
		m[o.Op] = i
	}
	return m
}()

// Spec returns op's row of [Ops]; ok is false for an op the protocol does
// not have.
func Spec(op subjects.Op) (spec OpSpec, ok bool) {
	i, ok := opIndex[op]
	if !ok {
		return OpSpec{}, false
	}
	return Ops[i], true
}

// Mutates reports whether op commits state (false for an unknown op).
func Mutates(op subjects.Op) bool {
	s, _ := Spec(op)
	return s.Mutates
}
