package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/membership/callout"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/store"
	"github.com/unibus/membership/subjects"
)

// The bus run (issue 16): a node of its own whose connections are
// authorized by the callout, as membershipd --bus enforce runs it embedded.
// It measures
//
//   - revocation: from the acknowledged room.remove to the last message the
//     removed member receives on the room's subject, with busEndpoints
//     endpoints connected (the owner publishes every millisecond);
//   - connect: a whole connection (TCP, INFO, callout answer) of an
//     endpoint in busRooms rooms among busIdentities identities, and
//     busEndpoints endpoints connecting at once: how many are admitted at
//     once, and how many more on their retry;
//
// and prints BUS revoke_p99_ms=N connect_p99_ms=N.

// busScale is the size of the bus run.
type busScale struct {
	identities, endpoints, rooms, revokes, connects, rounds int
}

// busScaleOf is the run's size: the targets, or a tenth in --quick.
func busScaleOf(o options) busScale {
	sc := busScale{identities: 10000, endpoints: 1000, rooms: 100, revokes: 100, connects: 500, rounds: 3}
	if o.quick {
		sc = busScale{identities: 120, endpoints: 100, rooms: 20, revokes: 20, connects: 200, rounds: 1}
	}
	if o.busRounds > 0 {
		sc.rounds = o.busRounds
	}
	if o.busEndpoints > 0 {
		sc.endpoints = o.busEndpoints
		sc.identities = max(sc.identities, sc.endpoints+2)
		sc.revokes = min(sc.revokes, sc.endpoints)
	}
	return sc
}

// busNode is the bus run's server, service and callout.
type busNode struct {
	co    *callout.Callout
	srv   *server.Server
	keys  *callout.EmbeddedKeys
	admin *client.Client
	shutdowns
}

// shutdowns are what a bus run closes at its end.
type shutdowns struct {
	mu    sync.Mutex // guards close: the connection storm dials from many goroutines
	close []func()
}

// onClose registers f to run at shutdown, in reverse order.
func (s *shutdowns) onClose(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.close = append(s.close, f)
}

func (s *shutdowns) shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.close) - 1; i >= 0; i-- {
		s.close[i]()
	}
}

// startBusNode starts the node in a new temporary directory (removed at
// shutdown) with fsync policy like the main run.
func startBusNode(ctx context.Context, o options) (*busNode, error) {
	dir, err := os.MkdirTemp("", "memberbench-bus-")
	if err != nil {
		return nil, err
	}
	b := &busNode{}
	b.onClose(func() { _ = os.RemoveAll(dir) })
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true,
		MaxConn: 1 << 16}
	if o.sync == "always" {
		opts.SyncAlways = true
	}
	if b.keys, err = callout.ConfigureEmbedded(opts); err != nil {
		b.shutdown()
		return nil, err
	}
	if b.srv, err = server.NewServer(opts); err != nil {
		b.shutdown()
		return nil, err
	}
	b.srv.Start()
	b.onClose(func() { b.srv.Shutdown(); b.srv.WaitForShutdown() })
	if !b.srv.ReadyForConnections(30 * time.Second) {
		b.shutdown()
		return nil, fmt.Errorf("bus node not ready")
	}
	if err := b.startService(ctx); err != nil {
		b.shutdown()
		return nil, err
	}
	return b, nil
}

// startService runs the service, its revoker and the callout on the node,
// and an admin connected with its key.
func (b *busNode) startService(ctx context.Context) error {
	dial := func(kp interface {
		PublicKey() (string, error)
		Sign([]byte) ([]byte, error)
	}) (*nats.Conn, error) {
		pub, _ := kp.PublicKey()
		nc, err := nats.Connect(b.srv.ClientURL(), nats.Nkey(pub, kp.Sign))
		if err == nil {
			b.onClose(nc.Close)
		}
		return nc, err
	}
	svcNC, err := dial(b.keys.Service)
	if err != nil {
		return err
	}
	sysNC, err := dial(b.keys.System)
	if err != nil {
		return err
	}
	js, err := jetstream.New(svcNC)
	if err != nil {
		return err
	}
	st, err := store.Open(ctx, js, store.Config{Bucket: subjects.DefaultBucket, KeysBucket: subjects.DefaultKeysBucket,
		Replicas: 1, MaxTTL: 2 * service.DefaultSkew}) // as membershipd embedded: direct gets
	if err != nil {
		return err
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	co, err := callout.New(callout.Config{Mode: callout.Enforce, Issuer: b.keys.Issuer,
		Account: callout.EmbeddedAccount, Prefix: subjects.DefaultPrefix, Logger: quiet})
	if err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(ctx)
	b.onClose(cancel)
	svc, err := service.Start(svcNC, st, service.Config{Revoke: co.NewRevoker(rctx, sysNC).Revoke,
		RateLimit: -1, Workers: 4, Logger: quiet})
	if err != nil {
		return err
	}
	b.onClose(func() { _ = svc.Stop() })
	if err := co.Serve(svcNC, svc); err != nil {
		return err
	}
	b.onClose(func() { _ = co.Stop() })
	b.co = co
	id, _ := identity.New("admin")
	pub, _ := id.Public()
	if _, err := service.Bootstrap(ctx, st, pub); err != nil {
		return err
	}
	nc, err := b.dial(id)
	if err != nil {
		return err
	}
	b.admin = client.New(nc, id, client.WithTimeout(30*time.Second))
	return nil
}

// dial connects id with its key; closed with the node.
func (b *busNode) dial(id *identity.Identity, opts ...nats.Option) (*nats.Conn, error) {
	nc, err := nats.Connect(b.srv.ClientURL(), append(client.BusOptions(id), opts...)...)
	if err == nil {
		b.onClose(nc.Close)
	}
	return nc, err
}

// busBench runs the bus measurements and prints the BUS lines: the
// seeding once, then the scale's rounds of measurements, each printed; the
// BUS line gives the medians of the rounds' figures.
func busBench(ctx context.Context, o options, out io.Writer) error {
	sc := busScaleOf(o)
	b, err := startBusNode(ctx, o)
	if err != nil {
		return err
	}
	defer b.shutdown()
	t0 := time.Now()
	ids, err := busRegister(ctx, b.admin, "bus", sc.identities)
	if err != nil {
		return err
	}
	hub := ids[0]
	hubNC, err := b.dial(hub)
	if err != nil {
		return err
	}
	hubCl := client.New(hubNC, hub, client.WithTimeout(30*time.Second))
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	if err := parallel(ctx, sc.rooms, 8, func(i int) error {
		return createRoom(ctx, hubCl, fmt.Sprintf("hub%03d", i), fmt.Sprintf("bus.hub.%03d", i), key, []*identity.Identity{hub})
	}); err != nil {
		return fmt.Errorf("bus seed rooms: %w", err)
	}
	fmt.Fprintf(out, "# bus: seeded %d identities, one endpoint in %d rooms, in %s\n", sc.identities, sc.rooms, time.Since(t0).Round(time.Millisecond))

	peers := ids[1 : 1+sc.endpoints]
	// The removals' rooms have an owner of their own: the hub stays in
	// exactly the scale's rooms, round after round.
	ownerNC, err := b.dial(ids[1+sc.endpoints])
	if err != nil {
		return err
	}
	owner := client.New(ownerNC, ids[1+sc.endpoints], client.WithTimeout(30*time.Second))
	var revokeP99, connectP99 []time.Duration
	for r := range sc.rounds {
		t1 := time.Now()
		if err := busRoomsAre(ctx, hubCl, sc.rooms); err != nil {
			return err
		}
		connect, err := busConnects(b, client.BusOptions(hub), sc.connects)
		if err != nil {
			return err
		}
		// The floor, same round: a user of the server config (the
		// service's key), which the callout is not asked about.
		pub, _ := b.keys.Service.PublicKey()
		plain, err := busConnects(b, []nats.Option{nats.Nkey(pub, b.keys.Service.Sign)}, sc.connects)
		if err != nil {
			return err
		}
		admitted, retried, storm, conns := busStorm(b, peers)
		victims := peers[:sc.revokes]
		rv, err := busRevokes(ctx, owner, fmt.Sprintf("rv%d", r), key, victims, b.dial, b.dial)
		for _, nc := range conns {
			nc.Close()
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "# bus round %d of %d: connect (%d rooms) p50 %s p99 %s (without the callout: p50 %s p99 %s); %d endpoints connecting at once: %d admitted in %s (%d more on a retry); "+
			"removal sent to connection cut p50 %s p99 %s; room created to first message on new connections p50 %s p99 %s (%d samples); revoke p99 %s; round %s\n",
			r+1, sc.rounds, sc.rooms, ms(pctOf(connect, 0.50)), ms(pctOf(connect, 0.99)), ms(pctOf(plain, 0.50)), ms(pctOf(plain, 0.99)), len(peers), admitted, storm.Round(time.Millisecond), retried,
			ms(pctOf(rv.cut, 0.50)), ms(pctOf(rv.cut, 0.99)), ms(pctOf(rv.grant, 0.50)), ms(pctOf(rv.grant, 0.99)), len(rv.cut),
			ms(pctOf(rv.revoke, 0.99)), time.Since(t1).Round(time.Millisecond))
		revokeP99 = append(revokeP99, pctOf(rv.revoke, 0.99))
		connectP99 = append(connectP99, pctOf(connect, 0.99))
	}
	fmt.Fprintf(out, "BUS revoke_p99_ms=%d connect_p99_ms=%d\n",
		pctOf(revokeP99, 0.5).Milliseconds(), pctOf(connectP99, 0.5).Milliseconds())
	return nil
}

// busRoomsAre checks that the measured endpoint is in exactly n rooms.
func busRoomsAre(ctx context.Context, cl *client.Client, n int) error {
	count := 0
	for after := ""; ; {
		page, err := cl.MyRooms(ctx, after, 0)
		if err != nil {
			return err
		}
		count += len(page.Rooms)
		if after = page.Next; after == "" {
			break
		}
	}
	if count != n {
		return fmt.Errorf("bus: the measured endpoint is in %d rooms, not %d", count, n)
	}
	return nil
}

// busRegister registers n new identities named prefix00000… through admin.
// Registry operations share one audit chain: a few at a time (more only
// conflict; the service retries them), and a conflict it gave up on is
// sent again.
func busRegister(ctx context.Context, admin *client.Client, prefix string, n int) ([]*identity.Identity, error) {
	ids := make([]*identity.Identity, n)
	if err := parallel(ctx, n, 3, func(i int) error {
		ids[i], _ = identity.New(fmt.Sprintf("%s%05d", prefix, i))
		pub, _ := ids[i].Public()
		for {
			if _, err := admin.Register(ctx, pub, false); !errors.Is(err, client.ErrConflict) {
				return err
			}
		}
	}); err != nil {
		return nil, fmt.Errorf("bus seed: %w", err)
	}
	return ids, nil
}

// pctOf is the q-quantile of ds (nearest rank).
func pctOf(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// busConnects times n sequential connections with opts.
func busConnects(b *busNode, opts []nats.Option, n int) ([]time.Duration, error) {
	out := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		nc, err := nats.Connect(b.srv.ClientURL(), opts...)
		if err != nil {
			return nil, fmt.Errorf("bus connect: %w", err)
		}
		out = append(out, time.Since(start))
		nc.Close()
	}
	return out, nil
}

// busStorm connects every peer at once and keeps the connections (the
// caller closes them); it reports how many were admitted and in how long,
// then dials the refused ones again, one at a time, as their clients
// would: retried counts those admitted then (a storm larger than the
// callout answers within the server's authorization timeout is partly
// refused, never wrongly).
func busStorm(b *busNode, peers []*identity.Identity) (admitted, retried int, took time.Duration, conns []*nats.Conn) {
	var mu sync.Mutex
	var refused []*identity.Identity
	var wg sync.WaitGroup
	start := time.Now()
	for _, p := range peers {
		wg.Go(func() {
			// BusOptions wait longer than the server's authorization
			// timeout: a refusal is heard, not guessed.
			nc, err := b.dial(p)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				refused = append(refused, p)
				return
			}
			conns = append(conns, nc)
		})
	}
	wg.Wait()
	took = time.Since(start)
	for _, p := range refused {
		if nc, err := b.dial(p); err == nil {
			retried++
			conns = append(conns, nc)
		}
	}
	return len(peers) - len(refused), retried, took, conns
}

// busDial connects an identity with its key to a server of the run.
type busDial func(id *identity.Identity, opts ...nats.Option) (*nats.Conn, error)

// revocations are the figures of busRevokes, one sample per victim.
type revocations struct {
	revoke, cut, grant []time.Duration
}

// busRevokes measures one removal per victim: a room (named prefix and the
// victim's index) is created with the victim, which connects anew through
// victimAt (a grant takes effect on the next connection) and receives what
// the owner publishes on its own new connection through ownerAt; the owner
// removes it through its client. revoke is the last message received after
// the removal was acknowledged (0 when the connection was cut before), cut
// the time from sending the removal to the connection's end, grant the
// time from the acknowledged room.create to the first message on the new
// connections.
func busRevokes(ctx context.Context, owner *client.Client, prefix string, key []byte, victims []*identity.Identity, victimAt, ownerAt busDial) (*revocations, error) {
	out := &revocations{}
	for i, v := range victims {
		room := fmt.Sprintf("%s%04d", prefix, i)
		if err := busRevoke(ctx, owner, room, "bus."+room, key, v, victimAt, ownerAt, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// busRevoke measures the removal of v from a new room; see busRevokes.
func busRevoke(ctx context.Context, owner *client.Client, room, subject string, key []byte, v *identity.Identity, victimAt, ownerAt busDial, out *revocations) error {
	if err := createRoom(ctx, owner, room, subject, key, []*identity.Identity{owner.Identity(), v}); err != nil {
		return err
	}
	created := time.Now()
	var last atomic.Int64
	gone := make(chan time.Time, 1)
	nc, err := victimAt(v, nats.NoReconnect(), nats.ClosedHandler(func(*nats.Conn) { gone <- time.Now() }))
	if err != nil {
		return err
	}
	defer nc.Close()
	got := make(chan struct{}, 1)
	if _, err := nc.Subscribe(subject, func(*nats.Msg) {
		last.Store(time.Now().UnixNano())
		select {
		case got <- struct{}{}:
		default:
		}
	}); err != nil {
		return err
	}
	// The owner's grant, too, takes effect on its next connection.
	pubNC, err := ownerAt(owner.Identity())
	if err != nil {
		return err
	}
	defer pubNC.Close()
	stop := publishEvery(pubNC, subject, time.Millisecond)
	defer stop()
	select {
	case <-got:
		out.grant = append(out.grant, time.Since(created))
	case <-time.After(10 * time.Second):
		return fmt.Errorf("bus: %s received nothing on its room", v.Endpoint)
	}
	sent := time.Now()
	if _, err := owner.RemoveMember(ctx, room, v.Endpoint); err != nil {
		return err
	}
	acked := time.Now()
	var end time.Time
	select {
	case end = <-gone:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("bus: %s not disconnected after its removal", v.Endpoint)
	}
	stop()
	out.revoke = append(out.revoke, max(0, time.Unix(0, last.Load()).Sub(acked)))
	out.cut = append(out.cut, end.Sub(sent))
	return nil
}

// publishEvery publishes on subject every d until stop is called (once or
// more).
func publishEvery(nc *nats.Conn, subject string, d time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = nc.Publish(subject, []byte("m"))
			}
		}
	})
	var once sync.Once
	return func() { once.Do(func() { close(done) }); wg.Wait() }
}
