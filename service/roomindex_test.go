package service_test

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/subjects"
)

// twoPaths runs, on one server and one bucket, a replica with the room index
// (the default prefix) and one without it (prefix "kv"), and returns a client
// of each for every endpoint.
type twoPaths struct {
	e      *env
	viaIdx map[string]*client.Client
	viaKV  map[string]*client.Client
}

func newTwoPaths(t *testing.T, endpoints []string) *twoPaths {
	t.Helper()
	e := newEnv(t, service.Config{RateLimit: -1})
	membertest.Service(t, e.s, service.Config{Prefix: "kv", RoomIndexWait: -1, RateLimit: -1})
	tp := &twoPaths{e: e, viaIdx: map[string]*client.Client{}, viaKV: map[string]*client.Client{}}
	for _, ep := range endpoints {
		id := e.register(t, ep)
		nc := natstest.Connect(t, e.s)
		tp.viaIdx[ep] = client.New(nc, id, client.WithRetries(0))
		tp.viaKV[ep] = client.New(nc, id, client.WithPrefix("kv"), client.WithRetries(0))
	}
	return tp
}

// walkMembers lists a room's members page by page.
func walkMembers(t *testing.T, c *client.Client, room string, limit int) []api.Member {
	t.Helper()
	var all []api.Member
	after := ""
	for {
		p, err := c.Members(natstest.Ctx(t, 2), room, after, limit)
		if err != nil {
			t.Fatalf("members of %s after %q: %v", room, after, err)
		}
		all = append(all, p.Members...)
		if p.Next == "" {
			return all
		}
		after = p.Next
	}
}

func walkRooms(t *testing.T, c *client.Client, limit int) []api.Room {
	t.Helper()
	var all []api.Room
	after := ""
	for {
		p, err := c.MyRooms(natstest.Ctx(t, 2), after, limit)
		if err != nil {
			t.Fatalf("my rooms after %q: %v", after, err)
		}
		all = append(all, p.Rooms...)
		if p.Next == "" {
			return all
		}
		after = p.Next
	}
}

// TestRoomIndexServesWhatTheStoreHolds drives random room changes and, after
// each, walks member lists and directories through both replicas: the
// index's pages must equal the pages listed from the store, and the index
// must actually have served them (its stats).
func TestRoomIndexServesWhatTheStoreHolds(t *testing.T) {
	var endpoints []string
	for i := 0; i < 8; i++ {
		endpoints = append(endpoints, fmt.Sprintf("p%d", i))
	}
	tp := newTwoPaths(t, endpoints)
	rng := rand.New(rand.NewPCG(7, 9))
	owner := endpoints[0]
	rooms := []string{"ra", "rb", "rc"}
	members := map[string]map[string]bool{}
	for _, r := range rooms {
		if _, _, err := tp.viaKV[owner].CreateRoom(natstest.Ctx(t, 2), r, "chat."+r, []string{endpoints[1]}); err != nil {
			t.Fatal(err)
		}
		members[r] = map[string]bool{owner: true, endpoints[1]: true}
	}
	check := func(step int) {
		for _, r := range rooms {
			limit := 1 + rng.IntN(3)
			a, b := walkMembers(t, tp.viaIdx[owner], r, limit), walkMembers(t, tp.viaKV[owner], r, limit)
			if !reflect.DeepEqual(a, b) || len(a) != len(members[r]) {
				t.Fatalf("step %d: members of %s: index %v, store %v, want %d", step, r, a, b, len(members[r]))
			}
		}
		for _, ep := range endpoints {
			a, b := walkRooms(t, tp.viaIdx[ep], 1+rng.IntN(2)), walkRooms(t, tp.viaKV[ep], 2)
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("step %d: rooms of %s: index %v, store %v", step, ep, a, b)
			}
		}
	}
	for step := 0; step < 30; step++ {
		r := rooms[rng.IntN(len(rooms))]
		ep := endpoints[1+rng.IntN(len(endpoints)-1)]
		var err error
		switch {
		case members[r][ep] && rng.IntN(2) == 0:
			_, err = tp.viaIdx[ep].Leave(natstest.Ctx(t, 2), r)
		case members[r][ep]:
			_, err = tp.viaKV[owner].RemoveMember(natstest.Ctx(t, 2), r, ep)
		default:
			_, err = tp.viaIdx[owner].AddMember(natstest.Ctx(t, 2), r, ep)
		}
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		members[r][ep] = !members[r][ep]
		if !members[r][ep] {
			delete(members[r], ep)
		}
		check(step)
	}
	if _, err := tp.viaKV[owner].DeleteRoom(natstest.Ctx(t, 2), "rc"); err != nil {
		t.Fatal(err)
	}
	rooms = rooms[:2]
	check(-1)
	for _, op := range []subjects.Op{subjects.OpRoomMembers, subjects.OpRoomMine} {
		for _, ep := range tp.e.svc.Micro().Stats().Endpoints {
			if ep.Name == op.EndpointName() && statInt(t, ep.Data, "index_pages") == 0 {
				t.Fatalf("%s: no page was served from the index (%s)", op, ep.Data)
			}
		}
	}
}

// TestMemberPageAfterChangeOnAnotherReplica: a member added or removed
// through one replica shows in the very next member page from another
// replica, whose index may not have seen the change yet.
func TestMemberPageAfterChangeOnAnotherReplica(t *testing.T) {
	tp := newTwoPaths(t, []string{"own", "guest"})
	owner := tp.viaKV["own"]
	if _, _, err := owner.CreateRoom(natstest.Ctx(t, 2), "rw", "chat.rw", nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 40; i++ {
		if _, err := owner.AddMember(natstest.Ctx(t, 2), "rw", "guest"); err != nil {
			t.Fatal(err)
		}
		if got := walkMembers(t, tp.viaIdx["own"], "rw", 10); len(got) != 2 {
			t.Fatalf("round %d: members right after the add: %v", i, got)
		}
		if i == 0 { // what the index relies on: the room record is written last
			m, err1 := tp.e.st.Room("rw").Get(natstest.Ctx(t, 2), "member.rw.guest")
			r, err2 := tp.e.st.Room("rw").Get(natstest.Ctx(t, 2), "room.rw")
			if err1 != nil || err2 != nil || m.Rev == 0 || m.Rev > r.Rev {
				t.Fatalf("member record at %d, room record at %d (%v, %v): the room record must come last", m.Rev, r.Rev, err1, err2)
			}
		}
		if _, err := owner.RemoveMember(natstest.Ctx(t, 2), "rw", "guest"); err != nil {
			t.Fatal(err)
		}
		if got := walkMembers(t, tp.viaIdx["own"], "rw", 10); len(got) != 1 {
			t.Fatalf("round %d: members right after the removal: %v", i, got)
		}
	}
}
