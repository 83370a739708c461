package service

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/store"
)

// loadedIndex is an index whose initial load is done.
func loadedIndex() *roomIndex {
	ri := newRoomIndex()
	ri.markLoaded()
	return ri
}

func roomEntry(t *testing.T, rev uint64, r api.Room) store.Change {
	t.Helper()
	return at(putEntry(t, keyRoom(r.ID), &r), rev)
}

func memberEntry(t *testing.T, room, endpoint string, since uint64) store.Change {
	t.Helper()
	return putEntry(t, keyMember(room, endpoint), &memberRecord{Since: since})
}

func memberGone(room, endpoint string) store.Change {
	return store.Change{Key: keyMember(room, endpoint), Rev: 1, Deleted: true}
}

// pageOf is the reference: a page of a sorted list, as the store path cuts it.
func pageOf(sorted []string, after string, limit int) ([]string, string) {
	var out []string
	for _, s := range sorted {
		if s > after {
			out = append(out, s)
		}
	}
	if len(out) > limit {
		return out[:limit], out[limit-1]
	}
	return out, ""
}

// TestRoomIndexPagesMatchReference applies random joins and leaves and
// checks every page of every list against the reference paging.
func TestRoomIndexPagesMatchReference(t *testing.T) {
	ri := loadedIndex()
	rng := rand.New(rand.NewPCG(1, 2))
	rooms, endpoints := 6, 40
	truth := map[string]map[string]uint64{} // room → endpoint → since
	for r := 0; r < rooms; r++ {
		id := fmt.Sprintf("r%d", r)
		truth[id] = map[string]uint64{}
		ri.apply(roomEntry(t, uint64(r+1), api.Room{ID: id, Owner: "e0", Epoch: 1}))
	}
	for step := 0; step < 2000; step++ {
		room := fmt.Sprintf("r%d", rng.IntN(rooms))
		ep := fmt.Sprintf("e%d", rng.IntN(endpoints))
		if rng.IntN(3) == 0 {
			delete(truth[room], ep)
			ri.apply(memberGone(room, ep))
		} else {
			since := uint64(rng.IntN(5) + 1)
			truth[room][ep] = since
			ri.apply(memberEntry(t, room, ep, since))
		}
	}
	for room, members := range truth {
		sorted := slices.Sorted(func(yield func(string) bool) {
			for e := range members {
				if !yield(e) {
					return
				}
			}
		})
		for _, limit := range []int{1, 3, 7, 100} {
			for _, after := range append([]string{"", "e", "e5", "zzz"}, sorted...) {
				want, wantNext := pageOf(sorted, after, limit)
				got, next, ok := ri.members(room, 0, after, limit)
				if !ok {
					t.Fatalf("%s: index did not answer", room)
				}
				gotIDs := make([]string, len(got))
				for i, m := range got {
					gotIDs[i] = m.endpoint
					if m.since != members[m.endpoint] {
						t.Fatalf("%s/%s since %d, want %d", room, m.endpoint, m.since, members[m.endpoint])
					}
				}
				if !slices.Equal(gotIDs, want) || next != wantNext {
					t.Fatalf("%s after %q limit %d: %v next %q, want %v next %q", room, after, limit, gotIDs, next, want, wantNext)
				}
			}
		}
	}
	for e := 0; e < endpoints; e++ {
		ep := fmt.Sprintf("e%d", e)
		var sorted []string
		for room, members := range truth {
			if _, ok := members[ep]; ok {
				sorted = append(sorted, room)
			}
		}
		slices.Sort(sorted)
		for _, limit := range []int{1, 2, 100} {
			for _, after := range append([]string{""}, sorted...) {
				want, wantNext := pageOf(sorted, after, limit)
				got, next, ok := ri.roomsOf(ep, nil, after, limit)
				if !ok {
					t.Fatal("a loaded index did not answer")
				}
				var gotIDs []string
				for _, r := range got {
					gotIDs = append(gotIDs, r.ID)
				}
				if !slices.Equal(gotIDs, want) || next != wantNext {
					t.Fatalf("rooms of %s after %q limit %d: %v next %q, want %v next %q", ep, after, limit, gotIDs, next, want, wantNext)
				}
			}
		}
	}
}

// TestRoomIndexAnswersOnlyWhenCurrent covers every case in which the index
// must send the request to the store.
func TestRoomIndexAnswersOnlyWhenCurrent(t *testing.T) {
	t.Run("not loaded", func(t *testing.T) {
		ri := newRoomIndex()
		ri.apply(roomEntry(t, 5, api.Room{ID: "r"}))
		if _, _, ok := ri.members("r", 5, "", 10); ok {
			t.Fatal("members answered before the initial load completed")
		}
		if _, _, ok := ri.roomsOf("a", nil, "", 10); ok {
			t.Fatal("rooms answered before the initial load completed")
		}
	})
	t.Run("room revision", func(t *testing.T) {
		ri := loadedIndex()
		ri.apply(roomEntry(t, 5, api.Room{ID: "r"}))
		for rev, want := range map[uint64]bool{4: true, 5: true, 6: false} {
			if _, _, ok := ri.members("r", rev, "", 10); ok != want {
				t.Fatalf("record at 5, request read %d: answered %v, want %v", rev, ok, want)
			}
		}
		if _, _, ok := ri.members("unknown", 1, "", 10); ok {
			t.Fatal("answered for a room it has never seen")
		}
		// A record that does not decode is forgotten.
		ri.apply(store.Change{Key: "room.r", Value: []byte{0xc1}, Rev: 7})
		if _, _, ok := ri.members("r", 5, "", 10); ok {
			t.Fatal("answered from an undecodable room record")
		}
	})
	t.Run("newest revision", func(t *testing.T) {
		ri := loadedIndex()
		ri.apply(roomEntry(t, 8, api.Room{ID: "r"}))
		ri.apply(store.Change{Key: "nonce.U.x", Value: []byte{1}, Rev: 9}) // any key counts
		ri.apply(roomEntry(t, 3, api.Room{ID: "old"}))                     // delivered late: no step back
		for seq, want := range map[uint64]bool{0: true, 9: true, 10: false} {
			if _, _, ok := ri.roomsOf("a", []uint64{seq}, "", 10); ok != want {
				t.Fatalf("applied up to 9, store at %d: answered %v, want %v", seq, ok, want)
			}
		}
		ri.reset()
		if _, _, ok := ri.roomsOf("a", nil, "", 10); ok {
			t.Fatal("answered after a reset")
		}
	})
	t.Run("newest revision of every shard", func(t *testing.T) {
		ri := loadedIndex()
		ri.apply(roomEntry(t, 9, api.Room{ID: "r"}))
		m := at(memberEntry(t, "s", "a", 1), 4)
		m.Shard = 2
		ri.apply(m)
		for _, tt := range []struct {
			seqs []uint64
			want bool
		}{
			{nil, true}, {[]uint64{9}, true}, {[]uint64{9, 0, 4}, true}, {[]uint64{0, 0, 4}, true},
			{[]uint64{9, 1, 4}, false}, // shard 1 has a revision the index has not applied
			{[]uint64{9, 0, 5}, false}, {[]uint64{10}, false}, {[]uint64{9, 0, 4, 1}, false},
		} {
			if _, _, ok := ri.roomsOf("a", tt.seqs, "", 10); ok != tt.want {
				t.Fatalf("applied shard 0 up to 9, shard 2 up to 4; store at %v: answered %v, want %v", tt.seqs, ok, tt.want)
			}
		}
	})
	t.Run("rooms listed", func(t *testing.T) {
		ri := loadedIndex()
		ri.apply(roomEntry(t, 1, api.Room{ID: "live"}))
		ri.apply(roomEntry(t, 2, api.Room{ID: "gone", Deleted: true}))
		for _, r := range []string{"live", "gone", "pending"} { // pending: members seen before the record
			ri.apply(memberEntry(t, r, "a", 1))
		}
		got, _, _ := ri.roomsOf("a", nil, "", 10)
		if len(got) != 1 || got[0].ID != "live" {
			t.Fatalf("rooms of a = %v, want only live", got)
		}
		got[0].Epoch = 99 // a caller's copy must not change the index
		if again, _, _ := ri.roomsOf("a", nil, "", 10); again[0].Epoch == 99 {
			t.Fatal("roomsOf returned the index's own record")
		}
		ri.apply(memberGone("live", "a"))
		if got, _, _ := ri.roomsOf("a", nil, "", 10); len(got) != 0 {
			t.Fatalf("rooms of a after leaving = %v", got)
		}
	})
	var nilIndex *roomIndex
	if _, _, ok := nilIndex.members("r", 0, "", 1); ok {
		t.Fatal("a disabled (nil) index answered")
	}
	if _, _, ok := nilIndex.roomsOf("a", nil, "", 1); ok {
		t.Fatal("a disabled (nil) index answered")
	}
}

// TestRoomRecordLast: the room record moves behind the other state writes,
// whose order is kept.
func TestRoomRecordLast(t *testing.T) {
	writes := []store.Write{{Key: "room.r"}, {Key: "member.r.a"}, {Key: "eprooms.a.r"}, {Key: "subject.x"}}
	roomRecordLast(writes)
	var keys []string
	for _, w := range writes {
		keys = append(keys, w.Key)
	}
	if want := []string{"member.r.a", "eprooms.a.r", "subject.x", "room.r"}; !slices.Equal(keys, want) {
		t.Fatalf("order %v, want %v", keys, want)
	}
}

// TestRoomIndexWakesWaitingPages: a page that the index cannot answer yet
// waits for the index's next change, not for a timer (RoomIndexWait is an
// hour here: only the change can end the wait).
func TestRoomIndexWakesWaitingPages(t *testing.T) {
	ri := newRoomIndex()
	ri.markLoaded()
	s := &Service{index: ri, cfg: Config{RoomIndexWait: time.Hour}}
	done := make(chan bool)
	go func() {
		done <- s.waitIndex(func() bool {
			_, _, ok := ri.members("r", 5, "", 10)
			return ok
		})
	}()
	ri.apply(roomEntry(t, 5, api.Room{ID: "r"}))
	if !<-done {
		t.Fatal("the page did not answer after the index caught up")
	}
}

// TestRoomIndexBusGrant: the bus grant answers only once every shard's
// revision the caller read is applied, and then reflects each identity
// change up to it: a disable, a new signing key (the old one no longer
// finds the identity), a left room, a deleted room.
func TestRoomIndexBusGrant(t *testing.T) {
	ri := loadedIndex()
	alice := api.Identity{Endpoint: "alice", SignKey: "UALICE1"}
	ri.apply(at(putEntry(t, keyIdentity("alice"), &alice), 1))
	ri.apply(at(putEntry(t, keySigner("UALICE1"), "alice"), 2))
	ri.apply(roomEntry(t, 3, api.Room{ID: "r1", Subject: "chat.r1"}))
	ri.apply(at(memberEntry(t, "r1", "alice", 1), 4))
	ri.apply(roomEntry(t, 5, api.Room{ID: "r2", Subject: "chat.r2"}))
	ri.apply(at(memberEntry(t, "r2", "alice", 1), 6))
	grant := func(key string, seq uint64) (*BusGrant, bool) { return ri.busGrant(key, []uint64{seq}) }
	if _, ok := grant("UALICE1", 7); ok {
		t.Fatal("answered before the revision read was applied")
	}
	if g, ok := grant("UALICE1", 6); !ok || g == nil || g.Endpoint != "alice" || g.Disabled || !slices.Equal(g.Subjects, []string{"chat.r1", "chat.r2"}) {
		t.Fatalf("grant %+v %v: want alice with both rooms", g, ok)
	}
	if g, ok := grant("UNOBODY", 6); !ok || g != nil {
		t.Fatalf("unknown key: %+v %v, want no identity", g, ok)
	}
	ri.apply(at(memberGone("r1", "alice"), 7))
	ri.apply(roomEntry(t, 8, api.Room{ID: "r2", Subject: "chat.r2", Deleted: true}))
	if g, _ := grant("UALICE1", 8); g == nil || len(g.Subjects) != 0 {
		t.Fatalf("after leaving r1 and r2's deletion: %+v, want no subjects", g)
	}
	alice.Disabled = true
	ri.apply(at(putEntry(t, keyIdentity("alice"), &alice), 9))
	if g, _ := grant("UALICE1", 9); g == nil || !g.Disabled {
		t.Fatalf("after the disable: %+v, want disabled", g)
	}
	// A new key: the identity record names it and the old signer key is
	// deleted, in one batch.
	alice.Disabled, alice.SignKey = false, "UALICE2"
	ri.apply(at(putEntry(t, keyIdentity("alice"), &alice), 10))
	if g, _ := grant("UALICE1", 10); g != nil {
		t.Fatalf("old key, identity naming the new one: %+v, want none", g)
	}
	ri.apply(store.Change{Key: keySigner("UALICE1"), Rev: 11, Deleted: true})
	ri.apply(at(putEntry(t, keySigner("UALICE2"), "alice"), 12))
	if g, _ := grant("UALICE1", 12); g != nil {
		t.Fatalf("old key after the change: %+v, want none", g)
	}
	if g, _ := grant("UALICE2", 12); g == nil || g.Endpoint != "alice" {
		t.Fatalf("new key: %+v, want alice", g)
	}
	ri.reset()
	if _, ok := grant("UALICE2", 0); ok {
		t.Fatal("answered while reloading")
	}
}
