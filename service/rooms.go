package service

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/store"
)

// MaxMembers bounds a room's membership.
const MaxMembers = api.MaxRekeyMembers

// room loads a live room; 404 when it does not exist or was deleted.
func (s *Service) room(ctx context.Context, c *call, id string) (*api.Room, uint64, error) {
	if err := api.ValidateID("room", id); err != nil {
		return nil, 0, err
	}
	var r api.Room
	rev, ok, err := s.get(ctx, c, keyRoom(id), &r)
	if err != nil {
		return nil, 0, err
	}
	if !ok || r.Deleted {
		return nil, 0, api.E(api.KindNotFound, "room %s does not exist", id)
	}
	return &r, rev, nil
}

// member loads endpoint's membership of room; nil if it is not a member.
func (s *Service) member(ctx context.Context, c *call, room, endpoint string) (*memberRecord, uint64, error) {
	var m memberRecord
	rev, ok, err := s.get(ctx, c, keyMember(room, endpoint), &m)
	if err != nil || !ok {
		return nil, rev, err
	}
	return &m, rev, nil
}

// checkSealer requires the sealer to be the signer's registered xkey, so a
// member can open its key with the sealer named in the reply.
func checkSealer(me *api.Identity, sealer string) error {
	if err := api.ValidateXKey("sealer", sealer); err != nil {
		return err
	}
	if sealer != me.XKey {
		return api.E(api.KindInvalid, "sealer must be the signer's registered xkey")
	}
	return nil
}

// activeMember requires endpoint to be a registered, enabled identity.
func (s *Service) activeMember(ctx context.Context, c *call, endpoint string) error {
	id, _, err := s.identity(ctx, c, endpoint)
	if err != nil {
		return err
	}
	if id == nil {
		return api.E(api.KindNotFound, "member %s is not registered", endpoint)
	}
	if id.Disabled {
		return api.E(api.KindInvalid, "member %s is disabled", endpoint)
	}
	return nil
}

// putBundle writes an epoch's sealed keys as one object.
func (s *Service) putBundle(ctx context.Context, c *call, name string, keys []api.SealedKey) error {
	b := bundle{Keys: make(map[string][]byte, len(keys))}
	for _, k := range keys {
		b.Keys[k.Endpoint] = k.Sealed
	}
	data, err := msgpack.Marshal(&b)
	if err != nil {
		return s.internal(c, "encode bundle", err)
	}
	if err := s.store.PutObject(ctx, name, data); err != nil {
		return s.storeErr(c, "put bundle", err)
	}
	return nil
}

// sealedSet validates sealed keys and returns them by endpoint; each
// endpoint at most once.
func sealedSet(keys []api.SealedKey) (map[string]bool, error) {
	set := make(map[string]bool, len(keys))
	for _, k := range keys {
		if err := api.ValidateSealed(k); err != nil {
			return nil, err
		}
		if set[k.Endpoint] {
			return nil, api.E(api.KindInvalid, "member %s appears twice", k.Endpoint)
		}
		set[k.Endpoint] = true
	}
	return set, nil
}

// createRoom creates a room owned by the signer, with its first epoch's
// sealed keys. The subject is claimed through its own key, so two rooms can
// never share one. Room ids are never reused: a deleted room keeps a
// tombstone.
func (s *Service) createRoom(ctx context.Context, c *call) (*mutation, error) {
	me := c.signer // authorized (authz.go)
	var req api.CreateRoomRequest
	if err := c.body(&req); err != nil {
		return nil, err
	}
	if err := api.ValidateID("room", req.ID); err != nil {
		return nil, err
	}
	if err := api.ValidateRoomSubject(req.Subject); err != nil {
		return nil, err
	}
	if err := checkSealer(me, req.Sealer); err != nil {
		return nil, err
	}
	if len(req.Members) > api.MaxInitialMembers {
		return nil, api.E(api.KindTooLarge, "at most %d initial members; add more afterwards", api.MaxInitialMembers)
	}
	set, err := sealedSet(req.Members)
	if err != nil {
		return nil, err
	}
	if !set[me.Endpoint] {
		return nil, api.E(api.KindInvalid, "members must include the owner %s", me.Endpoint)
	}
	var existing api.Room
	roomRev, found, err := s.get(ctx, c, keyRoom(req.ID), &existing)
	if err != nil {
		return nil, err
	}
	if found || roomRev != 0 {
		return nil, api.E(api.KindExists, "room id %s is taken", req.ID)
	}
	for _, k := range req.Members {
		if k.Endpoint != me.Endpoint {
			if err := s.activeMember(ctx, c, k.Endpoint); err != nil {
				return nil, err
			}
		}
	}
	subj, err := s.subjectWrites(ctx, c, req.Subject, req.ID) // subjectclaims.go
	if err != nil {
		return nil, err
	}
	now := c.now.UnixMilli()
	r := &api.Room{ID: req.ID, Subject: req.Subject, Owner: me.Endpoint, OwnerKey: me.SignKey,
		Epoch: 1, Members: len(req.Members), Created: now, Updated: now}
	obj := objectName(r.ID, 1, "bundle", c.digest)
	if err := s.putBundle(ctx, c, obj, req.Members); err != nil {
		return nil, err
	}
	m := &mutation{reply: r, audit: roomTarget(r, ""), objects: []string{obj}, writes: append(subj,
		put(keyRoom(r.ID), roomRev, r),
		put(keyEpoch(r.ID, 1), 0, &epochRecord{Object: obj, Sealer: req.Sealer}),
	)}
	for _, k := range req.Members {
		m.writes = append(m.writes,
			put(keyMember(r.ID, k.Endpoint), 0, &memberRecord{Since: 1}),
			put(keyEpRoom(k.Endpoint, r.ID), 0, r.ID))
	}
	return m, nil
}

// addMember adds a member with the current epoch's key sealed to it. The key
// must be for the current epoch: after a concurrent rekey it is refused.
func (s *Service) addMember(ctx context.Context, c *call) (*mutation, error) {
	var req api.AddMemberRequest
	if err := c.body(&req); err != nil {
		return nil, err
	}
	endpoint := req.Member.Endpoint
	if api.ValidateID("room", req.Room) == nil && api.ValidateID("endpoint", endpoint) == nil {
		// Every read below at once (prefetch.go): the room, the
		// membership and directory entry it must not have yet, the
		// member's identity and the room's audit head (audit.go).
		s.prefetch(ctx, c, keyRoom(req.Room), keyMember(req.Room, endpoint), keyIdentity(endpoint),
			keyEpRoom(endpoint, req.Room), keyAuditHead(api.RoomChain(req.Room)))
	}
	r, roomRev, _, err := s.roomFor(ctx, c, req.Room)
	if err != nil {
		return nil, err
	}
	if err := api.ValidateSealed(req.Member); err != nil {
		return nil, err
	}
	if err := checkSealer(c.signer, req.Sealer); err != nil {
		return nil, err
	}
	if req.Epoch != r.Epoch {
		return nil, api.E(api.KindConflict, "room %s is at epoch %d, the key is for epoch %d", r.ID, r.Epoch, req.Epoch)
	}
	if r.Members >= MaxMembers {
		return nil, api.E(api.KindTooLarge, "room %s has the maximum of %d members", r.ID, MaxMembers)
	}
	old, memRev, err := s.member(ctx, c, r.ID, endpoint)
	if err != nil {
		return nil, err
	}
	if old != nil {
		return nil, api.E(api.KindExists, "%s is already a member of room %s", endpoint, r.ID)
	}
	if err := s.activeMember(ctx, c, endpoint); err != nil {
		return nil, err
	}
	epRev, _, err := s.get(ctx, c, keyEpRoom(endpoint, r.ID), new(string))
	if err != nil {
		return nil, err
	}
	obj := objectName(r.ID, r.Epoch, "add-"+endpoint, c.digest)
	if err := s.store.PutObject(ctx, obj, req.Member.Sealed); err != nil {
		return nil, s.storeErr(c, "put sealed key", err)
	}
	r.Members++
	r.Updated = c.now.UnixMilli()
	rec := &memberRecord{Since: r.Epoch, KeyEpoch: r.Epoch, KeyObject: obj, Sealer: req.Sealer}
	return &mutation{reply: r, audit: roomTarget(r, endpoint), objects: []string{obj}, writes: []store.Write{
		put(keyRoom(r.ID), roomRev, r),
		put(keyMember(r.ID, endpoint), memRev, rec),
		put(keyEpRoom(endpoint, r.ID), epRev, r.ID),
	}}, nil
}

func (s *Service) removeMember(ctx context.Context, c *call) (*mutation, error) {
	var req api.RemoveMemberRequest
	if err := c.body(&req); err != nil {
		return nil, err
	}
	r, roomRev, _, err := s.roomFor(ctx, c, req.Room)
	if err != nil {
		return nil, err
	}
	if err := api.ValidateID("endpoint", req.Endpoint); err != nil {
		return nil, err
	}
	if req.Endpoint == r.Owner {
		return nil, api.E(api.KindInvalid, "the owner cannot be removed; delete the room instead")
	}
	return s.dropMember(ctx, c, r, roomRev, req.Endpoint, req.Endpoint)
}

func (s *Service) leaveRoom(ctx context.Context, c *call) (*mutation, error) {
	me := c.signer // authorized (authz.go)
	var req api.RoomRequest
	if err := c.body(&req); err != nil {
		return nil, err
	}
	r, roomRev, err := s.room(ctx, c, req.Room)
	if err != nil {
		return nil, err
	}
	if r.Owner == me.Endpoint {
		return nil, api.E(api.KindInvalid, "the owner cannot leave; delete the room instead")
	}
	return s.dropMember(ctx, c, r, roomRev, me.Endpoint, "")
}

// dropMember ends a membership and records that the room owes a rekey: the
// member still holds the current key, and no later key is sealed to it.
// target is the endpoint the audit entry names: the member removed, none
// when a member leaves.
func (s *Service) dropMember(ctx context.Context, c *call, r *api.Room, roomRev uint64, endpoint, target string) (*mutation, error) {
	m, memRev, err := s.member(ctx, c, r.ID, endpoint)
	if err != nil {
		return nil, err
	}
	if m == nil {
		if endpoint == c.signer.Endpoint {
			return nil, api.E(api.KindForbidden, "%s is not a member of room %s", endpoint, r.ID)
		}
		return nil, api.E(api.KindNotFound, "%s is not a member of room %s", endpoint, r.ID)
	}
	epRev, _, err := s.get(ctx, c, keyEpRoom(endpoint, r.ID), new(string))
	if err != nil {
		return nil, err
	}
	owedRev, _, err := s.get(ctx, c, keyOwed(r.ID), new(string))
	if err != nil {
		return nil, err
	}
	r.Members--
	r.RekeyOwed = true
	r.Updated = c.now.UnixMilli()
	return &mutation{reply: r, audit: roomTarget(r, target), writes: []store.Write{
		put(keyRoom(r.ID), roomRev, r),
		del(keyMember(r.ID, endpoint), memRev),
		del(keyEpRoom(endpoint, r.ID), epRev),
		put(keyOwed(r.ID), owedRev, r.ID),
	}}, nil
}

// rekey starts the next epoch. It must seal the new key to exactly the
// current members: the member list is read, and the room's revision in the
// batch guarantees it did not change before the commit.
func (s *Service) rekey(ctx context.Context, c *call) (*mutation, error) {
	var req api.RekeyRequest
	if err := c.body(&req); err != nil {
		return nil, err
	}
	r, roomRev, _, err := s.roomFor(ctx, c, req.Room)
	if err != nil {
		return nil, err
	}
	if err := checkSealer(c.signer, req.Sealer); err != nil {
		return nil, err
	}
	if len(req.Keys) > api.MaxRekeyMembers {
		return nil, api.E(api.KindTooLarge, "at most %d sealed keys per rekey", api.MaxRekeyMembers)
	}
	if req.Epoch != r.Epoch+1 {
		return nil, api.E(api.KindConflict, "room %s is at epoch %d; a rekey must name epoch %d", r.ID, r.Epoch, r.Epoch+1)
	}
	set, err := sealedSet(req.Keys)
	if err != nil {
		return nil, err
	}
	keys, err := s.listKeys(ctx, prefixMembers(r.ID))
	if err != nil {
		return nil, s.storeErr(c, "list members", err)
	}
	var missing []string
	for _, k := range keys {
		e := k[len(prefixMembers(r.ID)):]
		if !set[e] {
			missing = append(missing, e)
		}
		delete(set, e)
	}
	if len(missing) > 0 || len(set) > 0 {
		extra := make([]string, 0, len(set))
		for e := range set {
			extra = append(extra, e)
		}
		sort.Strings(missing)
		sort.Strings(extra)
		return nil, api.E(api.KindInvalid, "a rekey must seal exactly one key per current member: missing %s, not members %s",
			short(missing), short(extra))
	}
	writes, err := s.clearOwed(ctx, c, r)
	if err != nil {
		return nil, err
	}
	obj := objectName(r.ID, req.Epoch, "bundle", c.digest)
	if err := s.putBundle(ctx, c, obj, req.Keys); err != nil {
		return nil, err
	}
	r.Epoch = req.Epoch
	r.Updated = c.now.UnixMilli()
	return &mutation{reply: r, audit: roomTarget(r, ""), objects: []string{obj}, writes: append(writes,
		put(keyRoom(r.ID), roomRev, r),
		put(keyEpoch(r.ID, r.Epoch), 0, &epochRecord{Object: obj, Sealer: req.Sealer}),
	)}, nil
}

// clearOwed clears a room's owed-rekey mark, returning the write that
// removes its index key.
func (s *Service) clearOwed(ctx context.Context, c *call, r *api.Room) ([]store.Write, error) {
	if !r.RekeyOwed {
		return nil, nil
	}
	r.RekeyOwed = false
	rev, ok, err := s.get(ctx, c, keyOwed(r.ID), new(string))
	if err != nil || !ok {
		return nil, err
	}
	return []store.Write{del(keyOwed(r.ID), rev)}, nil
}

// short lists at most five names, for an error message.
func short(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	if len(names) > 5 {
		return fmt.Sprintf("%v and %d more", names[:5], len(names)-5)
	}
	return fmt.Sprint(names)
}

// deleteRoom tombstones the room and releases its subject (in the same batch
// with one shard, right after it with more: subjectclaims.go). The
// tombstone keeps the id from being reused, so member records left behind
// can never grant anything; they are removed right after the commit.
func (s *Service) deleteRoom(ctx context.Context, c *call) (*mutation, error) {
	var req api.RoomRequest
	if err := c.body(&req); err != nil {
		return nil, err
	}
	r, roomRev, _, err := s.roomFor(ctx, c, req.Room)
	if err != nil {
		return nil, err
	}
	subj, release, err := s.subjectRelease(ctx, c, r) // subjectclaims.go
	if err != nil {
		return nil, err
	}
	writes, err := s.clearOwed(ctx, c, r)
	if err != nil {
		return nil, err
	}
	r.Deleted = true
	r.Updated = c.now.UnixMilli()
	return &mutation{reply: r, audit: roomTarget(r, ""), writes: append(append(writes, subj...),
		put(keyRoom(r.ID), roomRev, r),
	), after: func() {
		if release != nil {
			release()
		}
		s.purgeRoom(c, r.ID)
	}}, nil
}

// purgeRoom removes what a deleted room leaves behind: member and directory
// records and sealed-key objects. Failures are logged; the tombstone already
// makes leftovers inert.
func (s *Service) purgeRoom(c *call, room string) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
	defer cancel()
	sh := s.store.Room(room)
	keys, err := sh.Keys(ctx, prefixMembers(room))
	if err == nil {
		for _, k := range keys {
			e := k[len(prefixMembers(room)):]
			if err = errors.Join(sh.Delete(ctx, k), sh.Delete(ctx, keyEpRoom(e, room))); err != nil {
				break
			}
		}
	}
	if err == nil {
		var objs []string
		if objs, err = s.store.ListObjects(ctx, room+"/"); err == nil {
			for _, o := range objs {
				if err = s.store.DeleteObject(ctx, o); err != nil {
					break
				}
			}
		}
	}
	if err != nil {
		s.cfg.Logger.Warn("purge deleted room", "op", c.op, "room", room, "error", err)
	}
}
