package main

// Scale seeding: a layout in which the measured clients are members of the
// same number of rooms whatever the total, seeded once through the service
// and reused across runs (--state), and the measurements that go with it
// (member-list pages of a large room, readiness of a restarted daemon, the
// daemon's resident size).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/subjects"
)

// seedState is what --state keeps between runs: enough to measure a seeded
// deployment again without seeding it again, or to seed it further. It
// holds identity seeds: keep it as private as the data directory.
type seedState struct {
	Run            string        `json:"run"`
	Admin          string        `json:"admin"`   // identity file text
	Clients        []string      `json:"clients"` // identity file texts
	Others         []string      `json:"others"`
	Registered     int           `json:"registered"` // clients + others registered
	RoomsPerClient int           `json:"rooms_per_client"`
	Members        int           `json:"members"`
	Rooms          int           `json:"rooms"` // rooms 0..Rooms-1 exist
	ClientRooms    [][]roomState `json:"client_rooms"`
	BigRoom        string        `json:"big_room,omitempty"`
	BigMembers     int           `json:"big_members,omitempty"`
	SmallRoom      string        `json:"small_room,omitempty"`
	SmallMembers   int           `json:"small_members,omitempty"`
	SeedSeconds    float64       `json:"seed_seconds"` // seeding time, all runs added up
}

type roomState struct {
	ID  string `json:"id"`
	Key []byte `json:"key"`
}

func loadState(path string) (*seedState, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	st := &seedState{}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return st, nil
}

func (st *seedState) save(path string) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func marshalIDs(ids []*identity.Identity) ([]string, error) {
	out := make([]string, len(ids))
	for i, id := range ids {
		b, err := id.Marshal()
		if err != nil {
			return nil, err
		}
		out[i] = string(b)
	}
	return out, nil
}

func parseIDs(texts []string) ([]*identity.Identity, error) {
	out := make([]*identity.Identity, len(texts))
	for i, t := range texts {
		id, err := identity.Parse([]byte(t))
		if err != nil {
			return nil, err
		}
		out[i] = id
	}
	return out, nil
}

// scaleMode says whether the scale layout (and its state file) is in use.
func (o options) scaleMode() bool { return o.roomsPerClient > 0 || o.state != "" }

// prepareState loads --state, or starts a new one, before the deployment is
// started: the run id and the admin come from it.
func (e *env) prepareState() error {
	o := e.o
	if o.state != "" {
		st, err := loadState(o.state)
		if err != nil {
			return err
		}
		if st != nil {
			if o.roomsPerClient > 0 && o.roomsPerClient != st.RoomsPerClient {
				return fmt.Errorf("--rooms-per-client %d: the state was seeded with %d", o.roomsPerClient, st.RoomsPerClient)
			}
			if len(st.Clients) != o.clients {
				return fmt.Errorf("--clients %d: the state was seeded with %d", o.clients, len(st.Clients))
			}
			adm, err := identity.Parse([]byte(st.Admin))
			if err != nil {
				return err
			}
			e.st, e.run, e.adminID = st, st.Run, adm
			return nil
		}
	}
	rpc := o.roomsPerClient
	if rpc <= 0 {
		rpc = 20
	}
	adm, err := identity.New("bench" + e.run + "admin")
	if err != nil {
		return err
	}
	at, err := adm.Marshal()
	if err != nil {
		return err
	}
	e.st = &seedState{Run: e.run, Admin: string(at), RoomsPerClient: rpc, Members: max(o.members, 1)}
	e.adminID = adm
	return nil
}

// seedScale seeds (or completes) the scale layout through the service:
//
//   - every measured client owns exactly RoomsPerClient rooms (rooms
//     0..clients×RoomsPerClient-1), each with Members members, the others
//     drawn from the non-client identities; the clients belong to no other
//     room, so what a client's own operations touch is the same at any
//     total;
//   - every further room is owned by a non-client identity (round-robin)
//     and filled with the next Members-1 of them;
//   - optionally one room with --big-room members (created with the first
//     256, the rest added one by one) and one room with --small-room
//     members, for the member-list page comparison.
//
// Identities are registered by the admin, rooms created by their owners,
// each with all its members and their sealed keys in one request.
func (e *env) seedScale(ctx context.Context) error {
	o, st := e.o, e.st
	e.seedBase, e.seedStart = st.SeedSeconds, time.Now()
	defer e.seedClock()
	members := st.Members
	nOthers := max(o.identities-o.clients, members, 1, o.rekey, o.bigRoom, o.smallRoom+1)
	cids, err := parseIDs(st.Clients)
	if err != nil {
		return err
	}
	others, err := parseIDs(st.Others)
	if err != nil {
		return err
	}
	mk := func(kind string, from, n int) ([]*identity.Identity, error) {
		var ids []*identity.Identity
		for i := from; i < n; i++ {
			id, err := identity.New(fmt.Sprintf("b%s%s%d", e.run, kind, i))
			if err != nil {
				return nil, err
			}
			ids = append(ids, id)
		}
		return ids, nil
	}
	more, err := mk("c", len(cids), o.clients)
	if err != nil {
		return err
	}
	cids = append(cids, more...)
	if more, err = mk("i", len(others), nOthers); err != nil {
		return err
	}
	others = append(others, more...)
	if st.Clients, err = marshalIDs(cids); err != nil {
		return err
	}
	if st.Others, err = marshalIDs(others); err != nil {
		return err
	}
	all := append(append([]*identity.Identity{}, cids...), others...)
	if st.Registered < len(all) {
		t := time.Now()
		n := len(all) - st.Registered
		if err := e.register(ctx, all[st.Registered:]); err != nil {
			return err
		}
		st.Registered = len(all)
		fmt.Fprintf(e.out, "# seed: registered %d identities in %s (%.0f/s)\n", n, time.Since(t).Round(time.Millisecond),
			float64(n)/time.Since(t).Seconds())
		if err := e.saveState(); err != nil {
			return err
		}
	}
	for i, id := range cids {
		e.clients = append(e.clients, client.New(e.conns[i], id, client.WithPrefix(e.prefix), client.WithRetries(0)))
	}
	e.others = others
	nClientRooms := o.clients * st.RoomsPerClient
	total := max(o.rooms, nClientRooms, st.Rooms)
	if len(st.ClientRooms) != o.clients {
		st.ClientRooms = make([][]roomState, o.clients)
	}
	keys := make([][]byte, total) // client rooms' keys, by room index
	if st.Rooms < total {
		t := time.Now()
		from := st.Rooms
		var done atomic.Int64
		stop := make(chan struct{})
		go func() { // progress, also into a log file
			tk := time.NewTicker(10 * time.Second)
			defer tk.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tk.C:
					n := done.Load()
					fmt.Fprintf(e.out, "# seed: %d/%d rooms, %.0f rooms/s\n", int64(from)+n, total, float64(n)/time.Since(t).Seconds())
				}
			}
		}()
		err := parallel(ctx, total-from, o.seedWorkers, func(i int) error {
			k := from + i
			var owner *identity.Identity
			var ms []*identity.Identity
			if k < nClientRooms {
				owner = cids[k%o.clients]
				ms = append(ms, owner)
				for j := 0; j < members-1; j++ {
					ms = append(ms, others[(k*(members-1)+j)%len(others)])
				}
			} else {
				oi := k % len(others)
				owner = others[oi]
				for j := 0; j < members; j++ {
					ms = append(ms, others[(oi+j)%len(others)])
				}
			}
			key, _ := client.NewRoomKey()
			rid := fmt.Sprintf("b%sr%d", e.run, k)
			c := client.New(e.conns[k%len(e.conns)], owner, client.WithPrefix(e.prefix))
			if err := createRoom(ctx, c, rid, "bench."+e.run+"."+rid, key, ms); err != nil {
				return fmt.Errorf("create room %s: %w", rid, err)
			}
			if k < nClientRooms {
				keys[k] = key
			}
			done.Add(1)
			return nil
		})
		close(stop)
		if err != nil {
			return err
		}
		for k := from; k < min(total, nClientRooms); k++ {
			w := k % o.clients
			st.ClientRooms[w] = append(st.ClientRooms[w], roomState{ID: fmt.Sprintf("b%sr%d", e.run, k), Key: keys[k]})
		}
		st.Rooms = total
		n := total - from
		fmt.Fprintf(e.out, "# seed: created %d rooms × %d members in %s (%.0f rooms/s, %d workers)\n", n, members,
			time.Since(t).Round(time.Millisecond), float64(n)/time.Since(t).Seconds(), o.seedWorkers)
		if err := e.saveState(); err != nil {
			return err
		}
	}
	if o.smallRoom > 0 && st.SmallRoom == "" {
		// Owned by others[1]; its members are others[1..smallRoom].
		rid := "b" + e.run + "small"
		if err := e.buildRoom(ctx, rid, others[1:1+o.smallRoom]); err != nil {
			return err
		}
		st.SmallRoom, st.SmallMembers = rid, o.smallRoom
		if err := e.saveState(); err != nil {
			return err
		}
	}
	if o.bigRoom > 0 && st.BigRoom == "" {
		rid := "b" + e.run + "big"
		ms := append([]*identity.Identity{others[1]}, others[0])
		ms = append(ms, others[2:o.bigRoom]...)
		t := time.Now()
		if err := e.buildRoom(ctx, rid, ms); err != nil {
			return err
		}
		fmt.Fprintf(e.out, "# seed: room of %d members built in %s\n", len(ms), time.Since(t).Round(time.Millisecond))
		st.BigRoom, st.BigMembers = rid, len(ms)
		if err := e.saveState(); err != nil {
			return err
		}
	}
	e.rooms = make([][]roomSeed, o.clients)
	for w, rs := range st.ClientRooms {
		for _, r := range rs {
			e.rooms[w] = append(e.rooms[w], roomSeed{id: r.ID, key: r.Key})
		}
	}
	// Joiners for the mutate operation: new in every run, since a run's
	// mutations make them members.
	perClient := st.RoomsPerClient
	nJoin := ((o.mutations+perClient-1)/perClient + 1) * o.mutateRows()
	if e.joiners, err = mk("j"+randHex(2)+"x", 0, nJoin); err != nil {
		return err
	}
	if strings.Contains(o.ops, "mutate") && !o.seedOnly {
		if err := e.register(ctx, e.joiners); err != nil {
			return err
		}
	}
	return nil
}

// seedClock adds this run's seeding time so far to the state's.
func (e *env) seedClock() { e.st.SeedSeconds = e.seedBase + time.Since(e.seedStart).Seconds() }

func (e *env) saveState() error {
	e.seedClock()
	if e.o.state == "" {
		return nil
	}
	return e.st.save(e.o.state)
}

// register registers ids through the admin: a few requests at a time, since
// registry operations share one audit chain and concurrent ones conflict.
func (e *env) register(ctx context.Context, ids []*identity.Identity) error {
	admins := []*client.Client{e.admin}
	for i := 1; i < 4; i++ {
		admins = append(admins, client.New(e.conns[i%len(e.conns)], e.admin.Identity(), client.WithPrefix(e.prefix)))
	}
	if err := parallel(ctx, len(ids), 3, func(i int) error {
		pub, _ := ids[i].Public()
		for {
			_, err := admins[i%len(admins)].Register(ctx, pub, false)
			if !errors.Is(err, client.ErrConflict) {
				return err
			}
		}
	}); err != nil {
		return fmt.Errorf("register: %w", err)
	}
	return nil
}

// buildRoom creates a room owned by ms[0] with the first 256 members and
// adds the rest one at a time (each add changes the room record, so adds to
// one room cannot run concurrently).
func (e *env) buildRoom(ctx context.Context, rid string, ms []*identity.Identity) error {
	owner := client.New(e.conns[0], ms[0], client.WithPrefix(e.prefix))
	key, _ := client.NewRoomKey()
	first := ms[:min(len(ms), api.MaxInitialMembers)]
	if err := createRoom(ctx, owner, rid, "bench."+e.run+"."+rid, key, first); err != nil {
		return fmt.Errorf("create room %s: %w", rid, err)
	}
	for i, j := range ms[len(first):] {
		if err := addMember(ctx, owner, rid, key, j); err != nil {
			return fmt.Errorf("room %s: add member %d: %w", rid, len(first)+i, err)
		}
		if (i+1)%1000 == 0 {
			fmt.Fprintf(e.out, "# seed: room %s has %d members\n", rid, len(first)+i+1)
		}
	}
	return nil
}

// pageTimes walks a room's member list page by page, `walks` times, as its
// owner, and returns each page's latency.
func (e *env) pageTimes(ctx context.Context, c *client.Client, rid string, limit, walks int) ([]time.Duration, int, error) {
	var lat []time.Duration
	pages := 0
	for w := 0; w < walks; w++ {
		after, n := "", 0
		for {
			t := time.Now()
			pg, err := c.Members(ctx, rid, after, limit)
			if err != nil {
				return nil, 0, err
			}
			lat = append(lat, time.Since(t))
			n += len(pg.Members)
			if pg.Next == "" {
				break
			}
			after = pg.Next
		}
		pages = n
	}
	return lat, pages, nil
}

// measurePages compares member-list page latency of the large room with the
// small room's, at the default and the largest page size.
func (e *env) measurePages(ctx context.Context) error {
	st := e.st
	if st == nil || st.BigRoom == "" || st.SmallRoom == "" || !e.o.pages {
		return nil
	}
	c := client.New(e.conns[0], e.others[1], client.WithPrefix(e.prefix), client.WithRetries(0))
	for _, limit := range []int{api.DefaultPage, api.MaxPage} {
		for _, r := range []struct {
			id string
			n  int
		}{{st.SmallRoom, st.SmallMembers}, {st.BigRoom, st.BigMembers}} {
			// About 100 pages in all (at least 2 walks), after one warm-up walk.
			walks := max(2, 100/((r.n+limit-1)/limit))
			if _, _, err := e.pageTimes(ctx, c, r.id, limit, 1); err != nil {
				return err
			}
			lat, n, err := e.pageTimes(ctx, c, r.id, limit, walks)
			if err != nil {
				return err
			}
			var sum time.Duration
			for _, d := range lat {
				sum += d
			}
			mean := sum / time.Duration(len(lat))
			slices.Sort(lat)
			q := func(p float64) time.Duration { return lat[int(p*float64(len(lat)-1))] }
			fmt.Fprintf(e.out, "PAGES room=%s members=%d limit=%d pages=%d p50_ms=%s p99_ms=%s mean_ms=%s max_ms=%s\n",
				r.id, n, limit, len(lat), ms(q(0.5)), ms(q(0.99)), ms(mean), ms(lat[len(lat)-1]))
		}
	}
	return nil
}

// rssOf reads a process's resident set size in kB (Linux).
func rssOf(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// probeReady waits until the service at --nats-url answers a signed call
// (whoami, as the admin of --state, or of --admin-identity) and prints when.
// Started together with membershipd, it times startup to ready.
func probeReady(ctx context.Context, o options) error {
	var adm *identity.Identity
	if o.adminFile != "" {
		id, err := identity.Load(o.adminFile)
		if err != nil {
			return err
		}
		adm = id
	} else {
		st, err := loadState(o.state)
		if err != nil || st == nil {
			return fmt.Errorf("--probe-ready needs --state of a seeded deployment or --admin-identity (%v)", err)
		}
		if adm, err = identity.Parse([]byte(st.Admin)); err != nil {
			return err
		}
	}
	t0 := time.Now()
	for ctx.Err() == nil {
		nc, err := nats.Connect(o.natsURL, nats.Name("memberbench-probe"))
		if err != nil {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		c := client.New(nc, adm, client.WithPrefix(o.prefixOrDefault()), client.WithRetries(0), client.WithTimeout(250*time.Millisecond))
		for ctx.Err() == nil {
			if _, err := c.Whoami(ctx); err == nil {
				now := time.Now()
				fmt.Printf("READY unix_ns=%d probe_waited=%s\n", now.UnixNano(), now.Sub(t0).Round(time.Millisecond))
				nc.Close()
				return nil
			}
			time.Sleep(5 * time.Millisecond)
			if nc.IsClosed() {
				break
			}
		}
		nc.Close()
	}
	return ctx.Err()
}

func (o options) prefixOrDefault() string {
	if o.prefix != "" {
		return o.prefix
	}
	return subjects.DefaultPrefix
}
