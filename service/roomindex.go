package service

import (
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/unibus/membership/service/api"
)

// The room index holds every room record and membership in memory, sorted,
// so that member lists and an endpoint's own rooms are served a page at a
// time without listing keys in the store (docs/performance.md, "Scale").
// One KV watch on the whole bucket keeps it current (cache.go).
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
//   - An endpoint's own rooms: while the index is fresh, like the identity
//     cache: at most RoomIndexMaxStale behind the store, normally the watch's
//     delivery delay. The directory is the caller's own (H3), so staleness
//     can only show a room the caller just left or miss one it just joined,
//     never another endpoint's rooms.
//
// Authorization never reads the index: every read of a room by name checks
// the caller's membership in the store.

// indexedRoom is a room as the index holds it.
type indexedRoom struct {
	record  api.Room
	rev     uint64 // revision of record; 0 until the record is seen
	members []indexedMember
}

// indexedMember is one membership: the endpoint and its first epoch.
type indexedMember struct {
	endpoint string
	since    uint64
}

// roomIndex is the in-memory index of rooms and memberships.
type roomIndex struct {
	freshness
	rooms map[string]*indexedRoom
	mine  map[string][]string // endpoint → its room ids, sorted
	names map[string]string   // interned ids and keys: each is held once
}

func newRoomIndex(maxStale time.Duration) *roomIndex {
	ri := &roomIndex{freshness: freshness{maxStale: maxStale}}
	ri.clear()
	return ri
}

func (ri *roomIndex) clear() {
	ri.rooms, ri.mine, ri.names = map[string]*indexedRoom{}, map[string][]string{}, map[string]string{}
}

func (ri *roomIndex) reset() {
	ri.mu.Lock()
	ri.clear()
	ri.forget()
	ri.mu.Unlock()
}

// intern returns the index's own copy of s, so that the many records naming
// the same endpoint or room share one string (and no watched key is kept
// alive by a substring of it).
func (ri *roomIndex) intern(s string) string {
	if v, ok := ri.names[s]; ok {
		return v
	}
	s = strings.Clone(s)
	ri.names[s] = s
	return s
}

func (ri *roomIndex) room(id string) *indexedRoom {
	r := ri.rooms[id]
	if r == nil {
		r = &indexedRoom{}
		ri.rooms[ri.intern(id)] = r
	}
	return r
}

// apply folds one watched entry into the index. Ids never hold dots
// (api.ValidateID), so member.<room>.<endpoint> splits one way only. A record
// that does not decode drops what the index knew, so requests read the store.
func (ri *roomIndex) apply(e jetstream.KeyValueEntry, probePrefix string) {
	key := e.Key()
	put := e.Operation() == jetstream.KeyValuePut
	ri.mu.Lock()
	defer ri.mu.Unlock()
	switch {
	case ri.sawProbe(e, probePrefix):
	case strings.HasPrefix(key, "room."):
		id := key[len("room."):]
		var rec api.Room
		if !put || msgpack.Unmarshal(e.Value(), &rec) != nil {
			if r := ri.rooms[id]; r != nil {
				r.record, r.rev = api.Room{}, 0
			}
			return
		}
		rec.ID, rec.Owner, rec.OwnerKey = ri.intern(rec.ID), ri.intern(rec.Owner), ri.intern(rec.OwnerKey)
		r := ri.room(id)
		r.record, r.rev = rec, e.Revision()
	case strings.HasPrefix(key, "member."):
		room, endpoint, ok := strings.Cut(key[len("member."):], ".")
		if !ok {
			return
		}
		var rec memberRecord
		if put && msgpack.Unmarshal(e.Value(), &rec) == nil {
			ri.addMember(room, endpoint, rec.Since)
		} else {
			ri.dropMember(room, endpoint)
		}
	}
}

func (ri *roomIndex) addMember(room, endpoint string, since uint64) {
	r := ri.room(room)
	endpoint = ri.intern(endpoint)
	i, found := slices.BinarySearchFunc(r.members, endpoint, func(m indexedMember, e string) int { return strings.Compare(m.endpoint, e) })
	if found {
		r.members[i].since = since
		return
	}
	r.members = slices.Insert(r.members, i, indexedMember{endpoint, since})
	rooms := ri.mine[endpoint]
	if j, found := slices.BinarySearch(rooms, room); !found {
		ri.mine[endpoint] = slices.Insert(rooms, j, ri.intern(room))
	}
}

func (ri *roomIndex) dropMember(room, endpoint string) {
	if r := ri.rooms[room]; r != nil {
		if i, found := slices.BinarySearchFunc(r.members, endpoint, func(m indexedMember, e string) int { return strings.Compare(m.endpoint, e) }); found {
			r.members = slices.Delete(r.members, i, i+1)
		}
	}
	rooms := ri.mine[endpoint]
	if j, found := slices.BinarySearch(rooms, room); found {
		if rooms = slices.Delete(rooms, j, j+1); len(rooms) == 0 {
			delete(ri.mine, endpoint)
		} else {
			ri.mine[endpoint] = rooms
		}
	}
}

// members returns a page of room's members (sorted by endpoint, after the
// cursor), if the index holds the room at revision rev or later. ok false
// means: read the store.
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
	i, _ := slices.BinarySearchFunc(r.members, after, func(m indexedMember, e string) int { return strings.Compare(m.endpoint, e) })
	if i < len(r.members) && r.members[i].endpoint == after {
		i++
	}
	rest := r.members[i:]
	if len(rest) > limit {
		rest, next = rest[:limit], rest[limit-1].endpoint
	}
	return slices.Clone(rest), next, true
}

// roomsOf returns a page of endpoint's rooms (sorted by id, after the
// cursor; deleted rooms left out), if the index is fresh. ok false means:
// read the store.
func (ri *roomIndex) roomsOf(endpoint string, now time.Time, after string, limit int) (page []api.Room, next string, ok bool) {
	if ri == nil {
		return nil, "", false
	}
	ri.mu.RLock()
	defer ri.mu.RUnlock()
	if !ri.fresh(now) {
		return nil, "", false
	}
	ids := ri.mine[endpoint]
	i, found := slices.BinarySearch(ids, after)
	if found {
		i++
	}
	ids = ids[i:]
	if len(ids) > limit {
		ids, next = ids[:limit], ids[limit-1]
	}
	page = make([]api.Room, 0, len(ids))
	for _, id := range ids {
		if r := ri.rooms[id]; r != nil && r.rev != 0 && !r.record.Deleted {
			page = append(page, r.record)
		}
	}
	return page, next, true
}
