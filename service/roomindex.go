package service

import (
	"slices"
	"strings"
	"sync"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/store"
)

// The room index holds every room record and membership in memory, sorted,
// so that member lists and an endpoint's own rooms are served a page at a
// time without listing keys in the store (docs/performance.md, "The room index").
// One KV watch on every shard keeps it current (cache.go, Store.Watch).
//
// When it may answer:
//
//   - A room's member pages: when the index holds the room record at the
//     revision (or a later one) that the request has just read from the store
//     to authorize the caller. Every batch that changes a room's members also
//     rewrites its room record, as the last state write of the batch
//     (roomRecordLast), and the stream is totally ordered: once the watch has
//     delivered that record, it has delivered the batch's member writes and
//     every earlier batch. So a page is as current as the authorization read,
//     on every replica, and a member added through another replica is listed
//     as soon as the room record that counts it is read. Otherwise (the watch
//     is behind, restarting or still loading) the page is read from the store.
//   - An endpoint's own rooms: when the watch has delivered every shard's
//     newest revision as the shard's stream leader gave it after the
//     request arrived (Store.NewestSeqs: its newest message still there, one per shard, read at once). The
//     watch sees every key of every shard, so the index then holds every
//     write acknowledged before the request: the caller sees its own join
//     or leave at once, whichever replica made it and whichever shard its
//     room is in. Revisions are per shard (each shard is its own stream),
//     so the index keeps the newest applied one of each.
//
//   - An identity for the bus callout (Service.BusGrant): under the same
//     condition as an endpoint's own rooms, with which it is answered in one
//     look. The index also holds, per endpoint, its signing key and whether
//     it is disabled, and which endpoint each signing key belongs to (the
//     id. and signer. keys, in the same ordered watch). So a disable or key
//     change acknowledged before a connection's callout began is seen by its
//     answer, on every replica: as current as a read from the stream leader
//     (a KV direct get on R3 may come from a follower).
//
// Either way a page waits up to Config.RoomIndexWait for the watch to catch
// up, then is read from the store.
//
// Authorization never reads the index: every read of a room by name checks
// the caller's membership in the store.

// The layout is compact because every replica holds it for the whole
// deployment: at 100k rooms and 1M memberships a first layout (strings
// everywhere) took 83 MB of live heap, this one 55 MB. Endpoints are
// numbered; a membership is a number and an epoch; an endpoint's rooms are
// pointers.

// indexedRoom is a room as the index holds it.
type indexedRoom struct {
	id      string
	record  api.Room
	rev     uint64       // revision of record; 0 until the record is seen
	members []membership // sorted by endpoint name
}

// membership is one member of a room: its endpoint's number and first epoch.
type membership struct {
	endpoint uint32
	since    uint64
}

// indexedIdentity is what the bus needs of an identity (zero: none).
type indexedIdentity struct {
	signKey  string
	disabled bool
}

// indexedMember is a membership as a page returns it.
type indexedMember struct {
	endpoint string
	since    uint64
}

// roomIndex is the in-memory index of rooms and memberships.
type roomIndex struct {
	mu        sync.RWMutex
	loaded    bool     // the watch delivered every current value
	applied   []uint64 // by shard (store.Change.Shard): revision of its newest entry applied
	rooms     map[string]*indexedRoom
	endpoints map[string]uint32 // endpoint → its number
	names     []string          // number → endpoint
	mine      [][]*indexedRoom  // number → its rooms, sorted by id
	ids       []indexedIdentity // number → its identity (zero: none)
	signers   map[string]uint32 // signing key → its endpoint's number
	keys      map[string]string // signing keys, each held once
	// next is closed at the index's next change, for the pages waiting
	// for it (nil while none waits: the watch's hot path allocates nothing).
	next chan struct{}
}

// changed returns a channel closed at the index's next change: a page that
// cannot answer yet takes it before looking, then waits on it.
func (ri *roomIndex) changed() <-chan struct{} {
	ri.mu.Lock()
	defer ri.mu.Unlock()
	if ri.next == nil {
		ri.next = make(chan struct{})
	}
	return ri.next
}

// notifyLocked wakes the waiting pages; the caller holds mu.
func (ri *roomIndex) notifyLocked() {
	if ri.next != nil {
		close(ri.next)
		ri.next = nil
	}
}

func newRoomIndex() *roomIndex {
	ri := &roomIndex{}
	ri.clear()
	return ri
}

func (ri *roomIndex) clear() {
	ri.rooms, ri.endpoints, ri.names, ri.mine, ri.keys = map[string]*indexedRoom{}, map[string]uint32{}, nil, nil, map[string]string{}
	ri.ids, ri.signers = nil, map[string]uint32{}
}

func (ri *roomIndex) reset() {
	ri.mu.Lock()
	ri.clear()
	ri.loaded, ri.applied = false, nil
	ri.notifyLocked()
	ri.mu.Unlock()
}

// markLoaded completes the initial load. The lists grew one insert at a
// time, with up to half their capacity unused: they are copied to their
// exact size.
func (ri *roomIndex) markLoaded() {
	ri.mu.Lock()
	defer ri.mu.Unlock()
	for _, r := range ri.rooms {
		r.members = slices.Clone(r.members)
	}
	for n, rooms := range ri.mine {
		ri.mine[n] = slices.Clone(rooms)
	}
	ri.loaded = true
	ri.notifyLocked()
}

// endpoint returns name's number, numbering it if it is new. The index keeps
// its own copy: no watched key stays alive through a substring of it.
func (ri *roomIndex) endpoint(name string) uint32 {
	if n, ok := ri.endpoints[name]; ok {
		return n
	}
	n := uint32(len(ri.names))
	name = strings.Clone(name)
	ri.endpoints[name] = n
	ri.names = append(ri.names, name)
	ri.mine = append(ri.mine, nil)
	ri.ids = append(ri.ids, indexedIdentity{})
	return n
}

func (ri *roomIndex) room(id string) *indexedRoom {
	r := ri.rooms[id]
	if r == nil {
		r = &indexedRoom{id: strings.Clone(id)}
		ri.rooms[r.id] = r
	}
	return r
}

// ownerKey is k, held once (a copy: no watched key stays alive through a
// substring of it).
func (ri *roomIndex) ownerKey(k string) string {
	if v, ok := ri.keys[k]; ok {
		return v
	}
	k = strings.Clone(k)
	ri.keys[k] = k
	return k
}

// apply folds one watched entry into the index. Ids never hold dots
// (api.ValidateID), so member.<room>.<endpoint> splits one way only. A record
// that does not decode drops what the index knew, so requests read the store.
func (ri *roomIndex) apply(e store.Change) {
	key := e.Key
	put := !e.Deleted
	ri.mu.Lock()
	defer ri.mu.Unlock()
	defer ri.notifyLocked()
	for len(ri.applied) <= e.Shard {
		ri.applied = append(ri.applied, 0)
	}
	ri.applied[e.Shard] = max(ri.applied[e.Shard], e.Rev)
	switch {
	case strings.HasPrefix(key, famRoom):
		id := key[len(famRoom):]
		var rec api.Room
		if !put || msgpack.Unmarshal(e.Value, &rec) != nil {
			if r := ri.rooms[id]; r != nil {
				r.record, r.rev = api.Room{}, 0
			}
			return
		}
		r := ri.room(id)
		rec.ID, rec.Owner, rec.OwnerKey = r.id, ri.names[ri.endpoint(rec.Owner)], ri.ownerKey(rec.OwnerKey)
		r.record, r.rev = rec, e.Rev
	case strings.HasPrefix(key, famMember):
		room, endpoint, ok := strings.Cut(key[len(famMember):], ".")
		if !ok {
			return
		}
		var rec memberRecord
		if put && msgpack.Unmarshal(e.Value, &rec) == nil {
			ri.addMember(room, endpoint, rec.Since)
		} else {
			ri.dropMember(room, endpoint)
		}
	case strings.HasPrefix(key, famIdentity), strings.HasPrefix(key, famSigner):
		ri.applyIdentity(key, put, e.Value)
	}
}

// applyIdentity folds an id. or signer. entry into the index; one that
// does not decode is dropped, so the bus reads the store.
func (ri *roomIndex) applyIdentity(key string, put bool, value []byte) {
	if pub, ok := strings.CutPrefix(key, famSigner); ok {
		var endpoint string
		if !put || msgpack.Unmarshal(value, &endpoint) != nil {
			delete(ri.signers, pub)
			return
		}
		ri.signers[ri.ownerKey(pub)] = ri.endpoint(endpoint)
		return
	}
	n := ri.endpoint(key[len(famIdentity):])
	var id api.Identity
	if !put || msgpack.Unmarshal(value, &id) != nil {
		ri.ids[n] = indexedIdentity{}
		return
	}
	ri.ids[n] = indexedIdentity{signKey: ri.ownerKey(id.SignKey), disabled: id.Disabled}
}

// busGrant returns the grant of the identity signing with signKey (nil if
// none has it), if the index has applied revision seqs[i] of every shard i.
// ok false means: not yet.
func (ri *roomIndex) busGrant(signKey string, seqs []uint64) (g *BusGrant, ok bool) {
	if ri == nil {
		return nil, false
	}
	ri.mu.RLock()
	defer ri.mu.RUnlock()
	if !ri.loaded || !ri.caughtUp(seqs) {
		return nil, false
	}
	n, found := ri.signers[signKey]
	if !found || ri.ids[n].signKey != signKey {
		return nil, true
	}
	g = &BusGrant{Endpoint: ri.names[n], Disabled: ri.ids[n].disabled}
	if g.Disabled {
		return g, true
	}
	g.Subjects = make([]string, 0, len(ri.mine[n]))
	for _, r := range ri.mine[n] {
		if r.rev != 0 && !r.record.Deleted {
			g.Subjects = append(g.Subjects, r.record.Subject)
		}
	}
	return g, true
}

// caughtUp reports whether every shard's revision in seqs is applied; the
// caller holds mu.
func (ri *roomIndex) caughtUp(seqs []uint64) bool {
	for i, seq := range seqs {
		if seq > 0 && (i >= len(ri.applied) || ri.applied[i] < seq) {
			return false
		}
	}
	return true
}

// findMember finds endpoint among r's members, or where it belongs.
func (ri *roomIndex) findMember(r *indexedRoom, endpoint string) (int, bool) {
	return slices.BinarySearchFunc(r.members, endpoint, func(m membership, e string) int { return strings.Compare(ri.names[m.endpoint], e) })
}

// findRoom finds room among rooms, or where it belongs.
func findRoom(rooms []*indexedRoom, id string) (int, bool) {
	return slices.BinarySearchFunc(rooms, id, func(r *indexedRoom, id string) int { return strings.Compare(r.id, id) })
}

func (ri *roomIndex) addMember(room, endpoint string, since uint64) {
	r := ri.room(room)
	i, found := ri.findMember(r, endpoint)
	if found {
		r.members[i].since = since
		return
	}
	n := ri.endpoint(endpoint)
	r.members = slices.Insert(r.members, i, membership{n, since})
	if j, found := findRoom(ri.mine[n], room); !found {
		ri.mine[n] = slices.Insert(ri.mine[n], j, r)
	}
}

func (ri *roomIndex) dropMember(room, endpoint string) {
	r := ri.rooms[room]
	if r == nil {
		return
	}
	i, found := ri.findMember(r, endpoint)
	if !found {
		return
	}
	n := r.members[i].endpoint
	r.members = slices.Delete(r.members, i, i+1)
	if j, found := findRoom(ri.mine[n], room); found {
		ri.mine[n] = slices.Delete(ri.mine[n], j, j+1)
	}
}

// members returns a page of room's members (sorted by endpoint, after the
// cursor), if the index holds the room at revision rev or later. ok false
// means: not yet.
func (ri *roomIndex) members(room string, rev uint64, after string, limit int) (page []indexedMember, next string, ok bool) {
	if ri == nil {
		return nil, "", false
	}
	ri.mu.RLock()
	defer ri.mu.RUnlock()
	r := ri.rooms[room]
	if !ri.loaded || r == nil || r.rev < rev {
		return nil, "", false
	}
	i, found := ri.findMember(r, after)
	if found {
		i++
	}
	rest := r.members[i:]
	if len(rest) > limit {
		rest, next = rest[:limit], ri.names[rest[limit-1].endpoint]
	}
	page = make([]indexedMember, len(rest))
	for k, m := range rest {
		page[k] = indexedMember{ri.names[m.endpoint], m.since}
	}
	return page, next, true
}

// roomsOf returns a page of endpoint's rooms (sorted by id, after the
// cursor; deleted rooms left out), if the index has applied revision
// seqs[i] of every shard i. ok false means: not yet.
func (ri *roomIndex) roomsOf(endpoint string, seqs []uint64, after string, limit int) (page []api.Room, next string, ok bool) {
	if ri == nil {
		return nil, "", false
	}
	ri.mu.RLock()
	defer ri.mu.RUnlock()
	if !ri.loaded || !ri.caughtUp(seqs) {
		return nil, "", false
	}
	n, known := ri.endpoints[endpoint]
	if !known {
		return []api.Room{}, "", true
	}
	rooms := ri.mine[n]
	i, found := findRoom(rooms, after)
	if found {
		i++
	}
	rooms = rooms[i:]
	if len(rooms) > limit {
		rooms, next = rooms[:limit], rooms[limit-1].id
	}
	page = make([]api.Room, 0, len(rooms))
	for _, r := range rooms {
		if r.rev != 0 && !r.record.Deleted {
			page = append(page, r.record)
		}
	}
	return page, next, true
}
