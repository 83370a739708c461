package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/store"
	"github.com/unibus/membership/subjects"
)

// defaultOps are the operations a run measures, in order. The add-member
// rows run twice, in both orders (mutate before mutate1, then after it):
// a deployment's first add-member row often ran slower than its second
// (docs/performance.md, "Shards"), and a ratio of rows taken in one order
// only would carry that into mutate_shards_vs_one.
const defaultOps = "echo,secho,read,key,mine,kv,mutate,mutate1,mutate1,mutate,batch,batchN"

// defaultShards is --shards' default: the room shards membershipd creates
// a deployment with.
const defaultShards = 4

// env is a running deployment with seeded data.
type env struct {
	o       options
	out     io.Writer
	prog    io.Writer
	url     string
	run     string // short random id: names of this run's identities and rooms (kept in --state)
	raw     string // short random id of this run alone: the raw baselines' keys
	prefix  string
	shards  int // room shards of the deployment
	svc     *service.Service
	srv     *server.Server
	nodes   []*server.Server // --cluster: the nodes (cluster.go)
	leaders []string         // --cluster: the node leading each room shard
	conns   []*nats.Conn     // one per client
	admin   *client.Client

	clients []*client.Client     // bench clients, one identity each
	others  []*identity.Identity // seeded identities that are not clients
	joiners []*identity.Identity // identities the mutate op adds, mutateRows shares of them
	mutRow  int                  // the add-member row running: it adds the joiners of its share
	rooms   [][]roomSeed         // rooms by owning client
	closers []func()

	st        *seedState         // scale layout (scale.go)
	adminID   *identity.Identity // nil: a new one
	seedBase  float64            // seeding seconds of earlier runs
	seedStart time.Time          // this run's seeding began
}

type roomSeed struct {
	id  string
	key []byte
}

// benchTo runs the benchmark, writing its report to out, without a
// progress line.
func benchTo(ctx context.Context, o options, out io.Writer) error {
	return bench(ctx, o, out, nil)
}

// close runs the env's closers, last registered first.
func (e *env) close() {
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
}

// bench runs the benchmark; prog, if not nil, gets a progress line.
func bench(ctx context.Context, o options, out, prog io.Writer) error {
	e := &env{o: o, out: out, prog: prog, run: randHex(3), raw: randHex(3)}
	defer e.close()
	if o.scaleMode() {
		if err := e.prepareState(); err != nil {
			return err
		}
	}
	if err := e.start(ctx); err != nil {
		return err
	}
	t0 := time.Now()
	if o.scaleMode() {
		if err := e.seedScale(ctx); err != nil {
			return fmt.Errorf("seed: %w", err)
		}
		fmt.Fprintf(e.out, "# scale layout: %d identities, %d rooms × %d members (each client owns %d rooms), %d-member room %q; this run's seeding %s, all seeding %.1f s\n",
			e.st.Registered+1, e.st.Rooms, e.st.Members, e.st.RoomsPerClient, e.st.BigMembers, e.st.BigRoom,
			time.Since(t0).Round(time.Millisecond), e.st.SeedSeconds)
		if o.seedOnly {
			return nil
		}
	} else {
		if err := e.seed(ctx); err != nil {
			return fmt.Errorf("seed: %w", err)
		}
		fmt.Fprintf(e.out, "# seeded %d identities, %d rooms × %d members in %s\n",
			len(e.clients)+len(e.others)+len(e.joiners)+1, e.o.rooms, e.o.members, time.Since(t0).Round(time.Millisecond))
		if o.seedOnly {
			return nil
		}
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	return e.measure(ctx)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// start brings up (or connects to) the deployment and the service.
func (e *env) start(ctx context.Context) error {
	o := e.o
	if o.clients < 1 {
		return errors.New("--clients must be at least 1")
	}
	e.url = o.natsURL
	if e.url == "" {
		dir, err := os.MkdirTemp("", "memberbench-")
		if err != nil {
			return err
		}
		e.closers = append(e.closers, func() { os.RemoveAll(dir) })
		opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir,
			MaxPayload: 8 << 20, NoLog: true, NoSigs: true}
		switch o.sync {
		case "always":
			opts.SyncAlways = true
		case "interval":
		default:
			d, err := time.ParseDuration(o.sync)
			if err != nil {
				return fmt.Errorf("--sync %q: want always, interval or a duration", o.sync)
			}
			opts.SyncInterval = d
		}
		if o.cluster > 1 {
			if e.url, err = e.startCluster(dir, opts); err != nil {
				return err
			}
		} else if err := e.startServer(opts); err != nil {
			return err
		}
	}
	mk := func(name string) (*nats.Conn, error) {
		nc, err := nats.Connect(e.url, nats.Name(name))
		if err == nil {
			e.closers = append(e.closers, nc.Close)
		}
		return nc, err
	}
	snc, err := mk("memberbench-service")
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	js, err := jetstream.New(snc)
	if err != nil {
		return err
	}
	skew := service.DefaultSkew
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := openClustered(sctx, js, store.Config{Bucket: e.bucket(), KeysBucket: e.bucket() + "-keys",
		MaxTTL: service.NonceTTL(skew), NewShards: max(o.shards, 1), Replicas: o.replicas()})
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	e.shards = st.RoomShards()
	if len(e.nodes) > 0 && e.shards > 1 {
		lctx, cancel := context.WithTimeout(ctx, 2*time.Minute) // elections on a loaded machine
		e.leaders, err = e.spreadLeaders(lctx, js, st)
		cancel()
		if err != nil {
			return fmt.Errorf("spread the shards' leaders: %w", err)
		}
	}
	cfg := service.Config{
		Prefix: o.prefix, Workers: o.workers, RateLimit: -1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if !o.idCache {
		cfg.IdentityMaxStale = -1
	} else {
		cfg.IdentityMaxStale = o.maxStale
	}
	if !o.keyCache {
		cfg.KeyCacheBytes = -1
	}
	if !o.roomIndex {
		cfg.RoomIndexWait = -1
	}
	if !o.external {
		svc, err := service.Start(snc, st, cfg)
		if err != nil {
			return fmt.Errorf("start service: %w", err)
		}
		e.svc = svc
		e.closers = append(e.closers, func() { _ = svc.Stop() })
	}
	_ = cfg.Validate()
	e.prefix = cfg.Prefix
	// The admin bootstraps straight into the store, as membershipd does.
	adm := e.adminID
	if adm == nil {
		if adm, err = identity.New("bench" + e.run + "admin"); err != nil {
			return err
		}
	}
	pub, _ := adm.Public()
	bctx, bcancel := context.WithTimeout(ctx, 30*time.Second) // sctx may be spent on the leaders
	defer bcancel()
	if _, err := service.Bootstrap(bctx, st, pub); err != nil {
		return fmt.Errorf("bootstrap admin: %w", err)
	}
	anc, err := mk("memberbench-admin")
	if err != nil {
		return err
	}
	e.admin = client.New(anc, adm, client.WithPrefix(e.prefix))
	for i := 0; i < o.clients; i++ {
		nc, err := mk("memberbench-client-" + strconv.Itoa(i))
		if err != nil {
			return err
		}
		e.conns = append(e.conns, nc)
	}
	if e.svc != nil {
		// The identity cache answers only once its watch is loaded and a
		// freshness probe came back; wait for that so that the first
		// measured requests are not store reads for a different reason.
		time.Sleep(min(o.maxStale, 500*time.Millisecond))
	}
	return nil
}

// startServer starts the embedded single node.
func (e *env) startServer(opts *server.Options) error {
	s, err := server.NewServer(opts)
	if err != nil {
		return err
	}
	s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		return errors.New("embedded nats-server did not start")
	}
	e.srv = s
	e.closers = append(e.closers, func() { s.Shutdown(); s.WaitForShutdown() })
	e.url = s.ClientURL()
	return nil
}

// rawBatch commits one atomic batch of the shape of an add-member commit
// into bucket: the nonce record (with its reply), the room, member and
// directory records, the audit entry and the audit chain head, each
// compare-and-set, under keys named by id.
func rawBatch(ctx context.Context, js jetstream.JetStream, bucket, id string, payload []byte, ttl time.Duration) error {
	base := fmt.Sprintf("$KV.%s.benchbatch.%s.", bucket, id)
	sizes := []int{300, 200, 120, 24, 350, 60}
	msgs := make([]*nats.Msg, len(sizes))
	for i, sz := range sizes {
		m := nats.NewMsg(base + strconv.Itoa(i))
		m.Data = payload[:sz]
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
		m.Header.Set(jetstream.MsgTTLHeader, ttl.String())
		msgs[i] = m
	}
	_, err := jetstreamext.PublishMsgBatch(ctx, js, msgs, jetstreamext.BatchFlowControl{AckFirst: false})
	return err
}

// bucket is the deployment's base bucket: the default, or its own for the
// one-shard deployment of mutate1.
func (e *env) bucket() string {
	if e.o.bucket != "" {
		return e.o.bucket
	}
	return subjects.DefaultBucket
}

// mutateOp adds a member as client worker w, its n-th call.
func (e *env) mutateOp(ctx context.Context, w, n int) error {
	rs := e.rooms[w]
	r := rs[n%len(rs)]
	share := len(e.joiners) / e.o.mutateRows()
	return addMember(ctx, e.clients[w], r.id, r.key, e.joiners[e.mutRow*share+n/len(rs)])
}

// mutateRows is how many rows of --ops add members to one deployment
// (mutate to this one, mutate1 to the one-shard one): each row adds
// joiners of its own, so that a row repeated for an A/B comparison in one
// run (--ops mutate,mutate1,mutate1,mutate) measures the same load as the
// first.
func (o options) mutateRows() int {
	n, n1 := 0, 0
	for _, name := range strings.Split(o.ops, ",") {
		switch strings.TrimSpace(name) {
		case "mutate":
			n++
		case "mutate1":
			n1++
		}
	}
	return max(1, n, n1)
}

// oneShard starts, on the same server, a second deployment of one room
// shard (its own buckets, service and subject prefix) seeded like this one
// for the mutate load: the same clients' count, rooms and members.
func (e *env) oneShard(ctx context.Context) (*env, error) {
	if e.o.external {
		return nil, errors.New("mutate1 needs an in-process service: drop it from --ops with --external")
	}
	o := e.o
	o.natsURL, o.shards, o.bucket, o.prefix = e.url, 1, subjects.DefaultBucket+"-one", "unibus.membench1.v1"
	o.roomsPerClient, o.state, o.bigRoom, o.rekey, o.cpuProfile = 0, "", 0, 0, ""
	o.identities = min(o.identities, o.clients+o.members)
	one := &env{o: o, out: io.Discard, run: e.run, raw: e.raw}
	e.closers = append(e.closers, one.close)
	if err := one.start(ctx); err != nil {
		return nil, err
	}
	if err := one.seed(ctx); err != nil {
		return nil, err
	}
	for _, c := range one.clients {
		if _, err := c.Whoami(ctx); err != nil {
			return nil, fmt.Errorf("prime client: %w", err)
		}
	}
	return one, nil
}

// parallel runs f(0..n-1) on `workers` goroutines; the first error wins.
func parallel(ctx context.Context, n, workers int, f func(i int) error) error {
	var next atomic.Int64
	var first error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// seed registers identities and creates rooms through the service itself.
func (e *env) seed(ctx context.Context) error {
	o := e.o
	if o.rooms < o.clients {
		o.rooms = o.clients
		e.o.rooms = o.rooms
	}
	if o.members < 1 {
		o.members = 1
	}
	perClient := (o.rooms + o.clients - 1) / o.clients
	nJoin := ((o.mutations+perClient-1)/perClient + 1) * o.mutateRows()
	nOthers := max(o.identities-o.clients, o.members, 1, o.rekey)
	mkIDs := func(kind string, n int) ([]*identity.Identity, error) {
		ids := make([]*identity.Identity, n)
		for i := range ids {
			id, err := identity.New(fmt.Sprintf("b%s%s%d", e.run, kind, i))
			if err != nil {
				return nil, err
			}
			ids[i] = id
		}
		return ids, nil
	}
	cids, err := mkIDs("c", o.clients)
	if err != nil {
		return err
	}
	if e.others, err = mkIDs("i", nOthers); err != nil {
		return err
	}
	if e.joiners, err = mkIDs("j", nJoin); err != nil {
		return err
	}
	all := append(append(append([]*identity.Identity{}, cids...), e.others...), e.joiners...)
	if err := e.register(ctx, all); err != nil {
		return err
	}
	opts := []client.Option{client.WithPrefix(e.prefix), client.WithRetries(0)}
	if e.o.unverified {
		opts = append(opts, client.WithUnverifiedReplies())
	}
	for i, id := range cids {
		e.clients = append(e.clients, client.New(e.conns[i], id, opts...))
	}
	e.rooms = make([][]roomSeed, o.clients)
	for i := range e.rooms {
		e.rooms[i] = make([]roomSeed, 0, perClient)
	}
	var mu sync.Mutex
	err = parallel(ctx, o.rooms, 16, func(k int) error {
		owner := k % o.clients
		c := e.clients[owner]
		rid := fmt.Sprintf("b%sr%d", e.run, k)
		key, _ := client.NewRoomKey()
		members := []*identity.Identity{c.Identity()}
		for j := 0; j < o.members-1; j++ {
			members = append(members, e.others[(k*(o.members-1)+j)%len(e.others)])
		}
		if err := createRoom(ctx, c, rid, "bench."+e.run+"."+rid, key, members); err != nil {
			return fmt.Errorf("create room %s: %w", rid, err)
		}
		mu.Lock()
		e.rooms[owner] = append(e.rooms[owner], roomSeed{id: rid, key: key})
		mu.Unlock()
		return nil
	})
	return err
}

// createRoom creates a room with members, sealing the key locally (the
// client's CreateRoom looks every member up first; seeding knows the keys).
func createRoom(ctx context.Context, c *client.Client, id, subject string, key []byte, members []*identity.Identity) error {
	sealer, _ := c.Identity().XKey.PublicKey()
	req := api.CreateRoomRequest{ID: id, Subject: subject, Sealer: sealer}
	for _, m := range members {
		x, _ := m.XKey.PublicKey()
		s, err := c.Identity().XKey.Seal(key, x)
		if err != nil {
			return err
		}
		req.Members = append(req.Members, api.SealedKey{Endpoint: m.Endpoint, Sealed: s})
	}
	return c.Call(ctx, subjects.OpRoomCreate, &req, nil)
}

// addMember adds m to a room at epoch 1, sealing the key locally (the
// client's AddMember fetches the room key and m's keys first).
func addMember(ctx context.Context, c *client.Client, room string, key []byte, m *identity.Identity) error {
	sealer, _ := c.Identity().XKey.PublicKey()
	x, _ := m.XKey.PublicKey()
	sealed, err := c.Identity().XKey.Seal(key, x)
	if err != nil {
		return err
	}
	return c.Call(ctx, subjects.OpRoomAdd, &api.AddMemberRequest{Room: room, Epoch: 1, Sealer: sealer,
		Member: api.SealedKey{Endpoint: m.Endpoint, Sealed: sealed}}, nil)
}

// measure runs every operation and its baseline and prints the results.
func (e *env) measure(ctx context.Context) error {
	o := e.o
	p := plan{clients: o.clients, count: o.count, duration: o.duration, progress: e.prog}
	pm := plan{clients: o.clients, count: o.mutations, progress: e.prog}
	payload := make([]byte, 400)
	_, _ = rand.Read(payload)

	var (
		secho []*client.Client // the signed echo's clients (signedecho.go)
		one   *env             // the one-shard deployment of mutate1
		err   error
	)
	for _, name := range strings.Split(o.ops, ",") {
		switch strings.TrimSpace(name) {
		case "secho":
			if secho, err = e.signedEchoClients(); err != nil {
				return err
			}
		case "mutate1", "read1", "mine1":
			if one != nil {
				continue
			}
			if one, err = e.oneShard(ctx); err != nil {
				return fmt.Errorf("one-shard deployment: %w", err)
			}
		}
	}

	// The echo baseline: a plain micro service on the same server.
	echoSubj := "membench." + e.run + ".echo"
	enc, err := nats.Connect(e.url, nats.Name("memberbench-echo"))
	if err != nil {
		return err
	}
	e.closers = append(e.closers, enc.Close)
	echo, err := micro.AddService(enc, micro.Config{Name: "membench_echo", Version: "1.0.0"})
	if err != nil {
		return err
	}
	e.closers = append(e.closers, func() { _ = echo.Stop() })
	if err := echo.AddEndpoint("echo", micro.HandlerFunc(func(r micro.Request) { _ = r.Respond(r.Data()) }),
		micro.WithEndpointSubject(echoSubj)); err != nil {
		return err
	}
	kvs := make([]jetstream.KeyValue, o.clients)
	objs := make([]jetstream.ObjectStore, o.clients)
	jss := make([]jetstream.JetStream, o.clients)
	for i, nc := range e.conns {
		if jss[i], err = jetstream.New(nc); err != nil {
			return err
		}
		if kvs[i], err = jss[i].KeyValue(ctx, subjects.DefaultBucket); err != nil {
			return err
		}
		if objs[i], err = jss[i].ObjectStore(ctx, subjects.DefaultKeysBucket); err != nil {
			return err
		}
	}
	nonceTTL := service.NonceTTL(service.DefaultSkew)
	var uniq atomic.Int64 // raw keys must be new in every call, across repeated ops
	room := func(w, n int) roomSeed { rs := e.rooms[w]; return rs[n%len(rs)] }

	ops := map[string]opFunc{
		"echo": func(ctx context.Context, w, n int) error {
			_, err := e.conns[w].RequestWithContext(ctx, echoSubj, payload[:300]) // about a signed room get
			return err
		},
		"secho": func(ctx context.Context, w, n int) error {
			_, err := secho[w].Room(ctx, room(w, n).id)
			return err
		},
		"read": func(ctx context.Context, w, n int) error {
			_, err := e.clients[w].Room(ctx, room(w, n).id)
			return err
		},
		"key": func(ctx context.Context, w, n int) error {
			_, err := e.clients[w].SealedKey(ctx, room(w, n).id, 0)
			return err
		},
		"mine": func(ctx context.Context, w, n int) error {
			_, err := e.clients[w].MyRooms(ctx, "", api.DefaultPage)
			return err
		},
		"kv": func(ctx context.Context, w, n int) error {
			_, err := kvs[w].Create(ctx, fmt.Sprintf("nonce.BENCH%s.%d", e.raw, uniq.Add(1)), payload[:64], jetstream.KeyTTL(nonceTTL))
			return err
		},
		"mutate":  e.mutateOp,
		"mutate1": func(ctx context.Context, w, n int) error { return one.mutateOp(ctx, w, n) },
		"read1": func(ctx context.Context, w, n int) error {
			rs := one.rooms[w]
			_, err := one.clients[w].Room(ctx, rs[n%len(rs)].id)
			return err
		},
		"mine1": func(ctx context.Context, w, n int) error {
			_, err := one.clients[w].MyRooms(ctx, "", api.DefaultPage)
			return err
		},
		"batch": func(ctx context.Context, w, n int) error {
			return rawBatch(ctx, jss[w], subjects.DefaultBucket, fmt.Sprintf("%s.%d", e.raw, uniq.Add(1)), payload, nonceTTL)
		},
		"obj": func(ctx context.Context, w, n int) error {
			_, err := objs[w].PutBytes(ctx, fmt.Sprintf("benchobj/%s/%d", e.raw, uniq.Add(1)), payload[:120])
			return err
		},
		"batchN": func(ctx context.Context, w, n int) error {
			u := uniq.Add(1)
			bucket := subjects.DefaultBucket
			if e.shards > 1 {
				bucket = subjects.RoomShardBucket(subjects.DefaultBucket, int(u)%e.shards)
			}
			return rawBatch(ctx, jss[w], bucket, fmt.Sprintf("%s.%d", e.raw, u), payload, nonceTTL)
		},
	}
	endpointOf := map[string]subjects.Op{"read": subjects.OpRoomGet, "key": subjects.OpRoomKey,
		"mine": subjects.OpRoomMine, "mutate": subjects.OpRoomAdd, "mutate1": subjects.OpRoomAdd,
		"read1": subjects.OpRoomGet, "mine1": subjects.OpRoomMine}

	var results []*result
	byName := map[string][]*result{} // a name's rows, in order
	type check struct {
		row               string
		op                subjects.Op
		sent, errs        int // errs: error replies from the service
		lost              int // no reply in time: not a micro error
		seenReq, seenErrs int
		ok                bool
	}
	var checks []check
	// After a restart the service refuses each client's first read once
	// (nonce_floor) and the client signs it again: two requests for one
	// call. One whoami per client learns the floor before counts are taken.
	for _, c := range e.clients {
		if _, err := c.Whoami(ctx); err != nil {
			return fmt.Errorf("prime client: %w", err)
		}
	}
	rssBefore := 0
	if o.pid > 0 {
		rssBefore = rssOf(o.pid)
	}
	for _, name := range strings.Split(o.ops, ",") {
		name = strings.TrimSpace(name)
		op, ok := ops[name]
		if !ok {
			return fmt.Errorf("--ops: unknown operation %q", name)
		}
		pl := p
		if name == "mutate" || name == "mutate1" || name == "batch" || name == "batchN" || name == "obj" {
			pl = pm
		}
		before, berr := microCounts(e.conns[0])
		r := run(ctx, name, pl, op)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch name {
		case "mutate":
			e.mutRow++
		case "mutate1":
			one.mutRow++
		}
		results = append(results, r)
		byName[name] = append(byName[name], r)
		if ep, isSvc := endpointOf[name]; isSvc {
			// micro counts a request when its handler returns, and a
			// request the client gave up on may still be in a handler:
			// wait for the counts to settle (at most 5 s).
			ck := check{row: name, op: ep, sent: r.ops, errs: r.svcErrs, lost: r.errors - r.svcErrs}
			for deadline := time.Now().Add(5 * time.Second); ; {
				time.Sleep(100 * time.Millisecond)
				after, aerr := microCounts(e.conns[0])
				if berr == nil && aerr == nil {
					b, a := before[ep.EndpointName()], after[ep.EndpointName()]
					ck.seenReq, ck.seenErrs = a[0]-b[0], a[1]-b[1]
					ck.ok = ck.seenReq == ck.sent && ck.seenErrs == ck.errs
				}
				if ck.ok || time.Now().After(deadline) {
					break
				}
			}
			checks = append(checks, ck)
		}
	}
	fmt.Fprintf(e.out, "# %d clients, sync=%s, workers=%d, id-cache=%v, key-cache=%v, room-index=%v, room shards=%d (mutate1: 1), GOMAXPROCS=%d\n",
		o.clients, e.syncName(), o.workers, o.idCache, o.keyCache, o.roomIndex, e.shards, runtime.GOMAXPROCS(0))
	if len(e.nodes) > 0 {
		fmt.Fprintf(e.out, "# cluster of %d nodes on loopback, buckets R%d, room shard leaders %s\n", len(e.nodes), o.replicas(), strings.Join(e.leaders, " "))
	}
	printTable(e.out, results)
	for _, ck := range checks {
		verdict := "MISMATCH"
		if ck.ok {
			verdict = "OK"
		}
		fmt.Fprintf(e.out, "STATS %-10s %-9s sent=%d error_replies=%d micro num_requests=%d num_errors=%d %s",
			ck.op.EndpointName(), "("+ck.row+")", ck.sent, ck.errs, ck.seenReq, ck.seenErrs, verdict)
		if ck.lost > 0 {
			fmt.Fprintf(e.out, " (%d calls got no reply in time; micro counts them as answered)", ck.lost)
		}
		fmt.Fprintln(e.out)
	}
	if err := e.measurePages(ctx); err != nil {
		fmt.Fprintf(e.out, "PAGES failed: %v\n", err)
	}
	if o.pid > 0 {
		fmt.Fprintf(e.out, "MEMORY pid %d RSS %.1f MB before the measured load, %.1f MB after it\n",
			o.pid, float64(rssBefore)/1024, float64(rssOf(o.pid))/1024)
	}
	if o.rekey > 0 {
		if err := e.rekeyTiming(ctx); err != nil {
			fmt.Fprintf(e.out, "REKEY failed: %v\n", err)
		}
	}
	if e.svc != nil && o.idCache {
		if served, refused, err := e.revocation(ctx); err != nil {
			fmt.Fprintf(e.out, "REVOCATION failed: %v\n", err)
		} else {
			if e.st != nil { // the state outlives this run: enable the victim again
				_, _ = e.admin.Enable(ctx, e.others[0].Endpoint)
			}
			fmt.Fprintf(e.out, "REVOCATION after the disable was acknowledged: last read served at +%s, first refused at +%s (bound %s)\n",
				served.Round(10*time.Microsecond), refused.Round(10*time.Microsecond), o.maxStale)
		}
	}
	if rss := rssKB(); rss > 0 {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		fmt.Fprintf(e.out, "MEMORY process RSS %.1f MB (server, service and clients in one process), Go heap in use %.1f MB\n",
			float64(rss)/1024, float64(ms.HeapInuse)/(1<<20))
	}
	// A ratio of two operations is that of their mean rates over their
	// rows (a row repeated in both orders: defaultOps).
	mean := func(name string) float64 {
		var sum float64
		for _, r := range byName[name] {
			sum += r.rate()
		}
		return sum / float64(max(1, len(byName[name])))
	}
	ratio := func(a, b string) float64 {
		if mean(b) == 0 {
			return 0
		}
		return mean(a) / mean(b)
	}
	e.channelFigures(ctx) // the channel row and its CHANNEL line (channel.go)
	if o.quick || o.bus { // bus.go
		if err := busBench(ctx, o, e.out); err != nil {
			fmt.Fprintf(e.out, "BUS failed: %v\n", err)
		}
	}
	fmt.Fprintf(e.out, "RATIOS read_vs_echo=%.2f key_vs_echo=%.2f mutate_vs_batch=%.2f read_vs_signed_echo=%.2f mutate_shards_vs_one=%.2f\n",
		ratio("read", "echo"), ratio("key", "echo"), ratio("mutate", "batch"), ratio("read", "secho"), ratio("mutate", "mutate1"))
	return nil
}

func (e *env) syncName() string {
	if e.o.natsURL != "" {
		return "external"
	}
	return e.o.sync
}

// microCounts asks every instance of the membership service for its stats
// (what `nats micro stats membership` does) and sums num_requests and
// num_errors per endpoint.
func microCounts(nc *nats.Conn) (map[string][2]int, error) {
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	subject, err := micro.ControlSubject(micro.StatsVerb, subjects.ServiceName, "")
	if err != nil {
		return nil, err
	}
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		return nil, err
	}
	out := map[string][2]int{}
	wait := time.Second
	for n := 0; ; n++ {
		m, err := sub.NextMsg(wait)
		if errors.Is(err, nats.ErrTimeout) && n > 0 {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		var st micro.Stats
		if err := json.Unmarshal(m.Data, &st); err != nil {
			return nil, err
		}
		for _, ep := range st.Endpoints {
			c := out[ep.Name]
			c[0] += ep.NumRequests
			c[1] += ep.NumErrors
			out[ep.Name] = c
		}
		wait = 300 * time.Millisecond
	}
}

// rekeyTiming builds a room with --rekey members (create with the first
// 256, add the rest) and times one rekey through the client.
func (e *env) rekeyTiming(ctx context.Context) error {
	c := e.clients[0]
	n := e.o.rekey
	rid := "b" + e.run + "rekey"
	key, _ := client.NewRoomKey()
	members := []*identity.Identity{c.Identity()}
	for i := 0; len(members) < min(n, api.MaxInitialMembers); i++ {
		members = append(members, e.others[i])
	}
	t0 := time.Now()
	if err := createRoom(ctx, c, rid, "bench."+e.run+".rekey", key, members); err != nil {
		return err
	}
	for i := len(members) - 1; i < n-1; i++ {
		if err := addMember(ctx, c, rid, key, e.others[i]); err != nil {
			return fmt.Errorf("add member %d: %w", i, err)
		}
	}
	built := time.Since(t0)
	t1 := time.Now()
	pages := 0
	after := ""
	var pageLat []time.Duration
	for {
		tp := time.Now()
		pg, err := c.Members(ctx, rid, after, api.MaxPage)
		if err != nil {
			return err
		}
		pageLat = append(pageLat, time.Since(tp))
		pages++
		if pg.Next == "" {
			break
		}
		after = pg.Next
	}
	listed := time.Since(t1)
	t2 := time.Now()
	if _, _, err := c.Rekey(ctx, rid); err != nil {
		return err
	}
	fmt.Fprintf(e.out, "REKEY room of %d members (built in %s): member list %d pages of %d in %s (per page %v), full client rekey %s\n",
		n, built.Round(time.Millisecond), pages, api.MaxPage, listed.Round(time.Millisecond), roundAll(pageLat), time.Since(t2).Round(time.Millisecond))
	return nil
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(100 * time.Microsecond)
	}
	return out
}

// revocation disables a seeded member that keeps reading a room, and
// reports how long after the disable was acknowledged a read of it was
// still served (the identity cache's revocation latency) and when the
// first refusal came.
func (e *env) revocation(ctx context.Context) (lastServed, firstRefused time.Duration, err error) {
	if e.o.members < 2 {
		return 0, 0, errors.New("needs --members 2 or more")
	}
	victim := e.others[0] // a member of room 0
	c := client.New(e.conns[0], victim, client.WithPrefix(e.prefix), client.WithRetries(0))
	rid := fmt.Sprintf("b%sr0", e.run)
	if _, err := c.Room(ctx, rid); err != nil {
		return 0, 0, fmt.Errorf("victim read before disable: %w", err)
	}
	var acked, lastOK atomic.Int64
	done := make(chan time.Time, 1)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		for rctx.Err() == nil {
			t := time.Now()
			_, err := c.Room(rctx, rid)
			switch {
			case err == nil:
				lastOK.Store(t.UnixNano())
			case errors.Is(err, client.ErrForbidden) || errors.Is(err, client.ErrUnauthenticated):
				if acked.Load() != 0 {
					done <- time.Now()
					return
				}
			}
		}
	}()
	time.Sleep(50 * time.Millisecond)
	if _, err := e.admin.Disable(ctx, victim.Endpoint); err != nil {
		return 0, 0, err
	}
	ack := time.Now()
	acked.Store(ack.UnixNano())
	select {
	case t := <-done:
		return max(0, time.Unix(0, lastOK.Load()).Sub(ack)), t.Sub(ack), nil
	case <-time.After(e.o.maxStale + 5*time.Second):
		return 0, 0, errors.New("reads still served long after the disable")
	}
}

// rssKB reads the process's resident set size (Linux).
func rssKB() int { return rssOf(os.Getpid()) }
