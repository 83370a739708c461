package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/client"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/store"
	"github.com/unibus/membership/subjects"
)

// The channel row: sealed+signed publish → verified+opened delivery
// between two members, batched into frames (client.WithBatching), against
// plain NATS pub/sub of the same messages on the same connections; the
// unbatched rate for reference; and the delivery delay of the first
// message after a rekey (docs/performance.md, "Encrypted room channels").
const (
	channelPayload = 1024
	channelLatRuns = 5 // single-message latencies, median of
	// channelBatch and channelLinger are the batching the row measures:
	// 256 messages of 1 KiB make a 263 KB frame, under the default 1 MB
	// max_payload; per-frame costs (signature, verification, allocations)
	// then fall below the per-byte ones (docs/performance.md: 64 measured
	// about half the rate).
	channelBatch  = 256
	channelLinger = time.Millisecond
	// channelRounds: after a warm-up pair, plain and batched runs
	// alternate this many times, in both orders by turns; the ratio is the
	// median of the rounds' own ratios, so that load from elsewhere on the
	// machine falls on both sides of each ratio alike.
	channelRounds = 5
	// channelUnbatched: the unbatched reference runs send this fraction of
	// the throughput runs' messages (they are 10–50× slower).
	channelUnbatched = 10
)

// channelMsgs is the message count of both throughput runs.
func (e *env) channelMsgs() int {
	if e.o.channelMsgs > 0 {
		return e.o.channelMsgs
	}
	if e.o.quick {
		return 50000
	}
	return 150000
}

// channelFigures measures the channel row and prints it, ending with the
// CHANNEL line. A failure is reported, not fatal: the other rows stand.
func (e *env) channelFigures(ctx context.Context) {
	if err := e.channelRow(ctx); err != nil {
		fmt.Fprintf(e.out, "CHANNEL failed: %v\n", err)
	}
}

// channelSide is one member: its pinned client and connection.
type channelSide struct {
	nc *nats.Conn
	c  *client.Client
}

func (e *env) channelRow(ctx context.Context) error {
	sides, prefix, err := e.channelSetup(ctx)
	if err != nil {
		return err
	}
	pub, sub := sides[0], sides[1]
	room := "b" + e.run + "chan"
	if _, _, err := pub.c.CreateRoom(ctx, room, "bench."+e.run+".chan", []string{sub.c.Identity().Endpoint}); err != nil {
		return fmt.Errorf("create room: %w", err)
	}
	pch, err := pub.c.Channel(ctx, room)
	if err != nil {
		return err
	}
	sch, err := sub.c.Channel(ctx, room)
	if err != nil {
		return err
	}
	n := e.channelMsgs()
	payload := make([]byte, channelPayload)
	_, _ = rand.Read(payload)

	pchb, err := pub.c.Channel(ctx, room, client.WithBatching(channelBatch, channelLinger))
	if err != nil {
		return err
	}
	// Frames are counted as the publisher connection's outgoing NATS
	// messages during the batched runs (a few are the channel's refreshes,
	// about one a second). Until 2026-12-02 a second subscription on the
	// subscriber's connection counted them: the server then delivered, and
	// the subscriber read, every frame twice, which plain NATS never paid.
	var frames atomic.Int64
	var plainCPU, batchedCPU []float64 // process CPU µs per message, per run
	plainRun := func(n int) (float64, error) {
		defer cpuPerMsg(&plainCPU, n)()
		r, err := plainThroughput(ctx, pub.nc, sub.nc, "bench."+e.run+".plain", payload, n)
		if err != nil {
			err = fmt.Errorf("plain: %w", err)
		}
		return r, err
	}
	batchedRun := func(n int) (float64, error) {
		defer cpuPerMsg(&batchedCPU, n)()
		sent := pub.nc.Stats().OutMsgs
		defer func() { frames.Add(int64(pub.nc.Stats().OutMsgs - sent)) }()
		r, err := channelThroughput(ctx, pchb, sch, payload, n)
		if err != nil {
			err = fmt.Errorf("channel, batched: %w", err)
		}
		return r, err
	}
	rounds, err := alternate(channelRounds, n, plainRun, batchedRun)
	if err != nil {
		return err
	}
	perFrame := float64(channelRounds*n+max(n/5, 1)) / float64(max(frames.Load(), 1))
	for i, r := range rounds { // the CPU figures' first are the warm-up's
		fmt.Fprintf(e.out, "# channel round: plain %.0f msg/s, batched %.0f msg/s: %.2f (process CPU per message: plain %.1f µs, batched %.1f µs)\n",
			r.plain, r.batched, r.batched/r.plain, plainCPU[i+1], batchedCPU[i+1])
	}
	plain, batched, ratio := rounds.medians()
	n /= channelUnbatched
	sealed, err := channelThroughput(ctx, pch, sch, payload, n)
	if err != nil {
		return fmt.Errorf("channel: %w", err)
	}
	nv := runtime.GOMAXPROCS(0)
	pchv, err := sub.c.Channel(ctx, room, client.WithVerifiers(nv))
	if err != nil {
		return err
	}
	sealedPar, err := channelThroughput(ctx, pch, pchv, payload, n)
	if err != nil {
		return fmt.Errorf("channel, %d verifiers: %w", nv, err)
	}
	first, plainLat, err := rekeyDelay(ctx, pub, pch, sch, room, "bench."+e.run+".plain", sub.nc)
	if err != nil {
		return fmt.Errorf("rekey: %w", err)
	}
	extra := first - plainLat
	fmt.Fprintf(e.out, "# channel (service %s, pinned key): %d messages of %d B, one publisher, one subscriber, medians of %d alternating rounds after a warm-up: plain %.0f msg/s, channel batched (%d, %s) %.0f msg/s in frames of %.0f messages on average, ratio %.2f; unbatched (%d messages) %.0f msg/s (%.2f× plain), unbatched with %d verifiers %.0f msg/s (refused %d); first message after a rekey delivered in %.2f ms, a plain message in %.2f ms\n",
		prefix, n*channelUnbatched, channelPayload, channelRounds, plain, channelBatch, channelLinger, batched, perFrame, ratio, n, sealed, sealed/plain, nv, sealedPar, sch.Refused()+pchv.Refused(), msF(first), msF(plainLat))
	fmt.Fprintf(e.out, "CHANNEL channel_vs_plain=%.2f rekey_extra_ms=%.1f\n", ratio, msF(extra))
	return nil
}

// channelRound is one round's two rates (msg/s).
type channelRound struct{ plain, batched float64 }

type roundRates []channelRound

// alternate runs one warm-up pair of a fifth of n messages (untimed: the
// first runs of a process pay for growing its heap and buffers), then
// rounds pairs of n, plain first in even rounds and batched first in odd
// ones, so neither side always runs in the other's wake.
func alternate(rounds, n int, plain, batched func(n int) (float64, error)) (roundRates, error) {
	if _, err := plain(max(n/5, 1)); err != nil {
		return nil, err
	}
	if _, err := batched(max(n/5, 1)); err != nil {
		return nil, err
	}
	out := make(roundRates, rounds)
	for i := range out {
		first, second := plain, batched
		if i%2 == 1 {
			first, second = batched, plain
		}
		a, err := first(n)
		if err != nil {
			return nil, err
		}
		b, err := second(n)
		if err != nil {
			return nil, err
		}
		out[i] = channelRound{a, b}
		if i%2 == 1 {
			out[i] = channelRound{b, a}
		}
	}
	return out, nil
}

// cpuPerMsg starts timing the process's CPU (user and system: server,
// service and both clients, getrusage) for a run of n messages; the
// returned function appends its µs per message to to.
func cpuPerMsg(to *[]float64, n int) func() {
	c0 := processCPU()
	return func() { *to = append(*to, float64((processCPU()-c0).Microseconds())/float64(n)) }
}

// medians are the median plain and batched rates and the median of the
// rounds' ratios (the figure: each ratio's two runs saw the same machine).
func (rs roundRates) medians() (plain, batched, ratio float64) {
	var p, b, r []float64
	for _, x := range rs {
		p, b, r = append(p, x.plain), append(b, x.batched), append(r, x.batched/x.plain)
	}
	return median(p), median(b), median(r)
}

// median of rates (sorts them).
func median(rates []float64) float64 {
	slices.Sort(rates)
	return rates[len(rates)/2]
}

func msF(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// channelSetup starts a service replica that signs its replies (the
// channel checks members against signed replies) on its own prefix over
// the same store, and registers two members with clients pinned to it.
func (e *env) channelSetup(ctx context.Context) ([]channelSide, string, error) {
	skp, err := nkeys.CreateServer()
	if err != nil {
		return nil, "", err
	}
	spub, _ := skp.PublicKey()
	snc, err := e.channelConn("memberbench-channel-service")
	if err != nil {
		return nil, "", err
	}
	js, err := jetstream.New(snc)
	if err != nil {
		return nil, "", err
	}
	st, err := store.Open(ctx, js, store.Config{Bucket: subjects.DefaultBucket, KeysBucket: subjects.DefaultKeysBucket, MaxTTL: service.NonceTTL(service.DefaultSkew)})
	if err != nil {
		return nil, "", fmt.Errorf("open store: %w", err)
	}
	prefix := "membench." + e.run + ".signed"
	svc, err := service.Start(snc, st, service.Config{Prefix: prefix, ServiceKey: skp, RateLimit: -1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return nil, "", fmt.Errorf("start signing replica: %w", err)
	}
	e.closers = append(e.closers, func() { _ = svc.Stop() })
	var sides []channelSide
	for _, name := range []string{"chpub", "chsub"} {
		id, err := identity.New("b" + e.run + name)
		if err != nil {
			return nil, "", err
		}
		pk, _ := id.Public()
		if _, err := e.admin.Register(ctx, pk, false); err != nil {
			return nil, "", fmt.Errorf("register %s: %w", name, err)
		}
		nc, err := e.channelConn("memberbench-" + name)
		if err != nil {
			return nil, "", err
		}
		sides = append(sides, channelSide{nc: nc, c: client.New(nc, id, client.WithPrefix(prefix), client.WithServiceKey(spub))})
	}
	return sides, prefix, nil
}

func (e *env) channelConn(name string) (*nats.Conn, error) {
	nc, err := nats.Connect(e.url, nats.Name(name))
	if err == nil {
		e.closers = append(e.closers, nc.Close)
	}
	return nc, err
}

// plainThroughput publishes n messages on subject from pnc and returns
// the rate at which snc received them all (msg/s).
func plainThroughput(ctx context.Context, pnc, snc *nats.Conn, subject string, payload []byte, n int) (float64, error) {
	done := make(chan struct{})
	got := 0
	sub, err := snc.Subscribe(subject, func(*nats.Msg) {
		if got++; got == n {
			close(done)
		}
	})
	if err != nil {
		return 0, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	_ = sub.SetPendingLimits(-1, -1) // count every message: nothing dropped as a slow consumer
	if err := snc.Flush(); err != nil {
		return 0, err
	}
	t0 := time.Now()
	for range n {
		if err := pnc.Publish(subject, payload); err != nil {
			return 0, err
		}
	}
	return waitRate(ctx, done, t0, n)
}

// channelThroughput publishes n sealed messages on pch and returns the
// rate at which sch delivered them all, verified and opened (msg/s).
func channelThroughput(ctx context.Context, pch, sch *client.Channel, payload []byte, n int) (float64, error) {
	done := make(chan struct{})
	got := 0
	sub, err := sch.Subscribe(ctx, func(*client.Message) {
		if got++; got == n {
			close(done)
		}
	})
	if err != nil {
		return 0, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := sub.SetPendingLimits(-1, -1); err != nil { // as plain's: nothing dropped
		return 0, err
	}
	t0 := time.Now()
	for range n {
		if _, err := pch.Publish(ctx, payload); err != nil {
			return 0, err
		}
	}
	if err := pch.Flush(ctx); err != nil { // a batching channel's last frame
		return 0, err
	}
	return waitRate(ctx, done, t0, n)
}

func waitRate(ctx context.Context, done <-chan struct{}, t0 time.Time, n int) (float64, error) {
	select {
	case <-done:
		return float64(n) / time.Since(t0).Seconds(), nil
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(2 * time.Minute):
		return 0, fmt.Errorf("not all %d messages arrived", n)
	}
}

// rekeyDelay rekeys the room (the publisher, its owner, knows the new key
// at once), then times the first message of the new epoch from publish to
// delivery, which includes the subscriber's fetch of the new key and
// member list, and the median of channelLatRuns plain messages.
func rekeyDelay(ctx context.Context, owner channelSide, pch, sch *client.Channel, room, plainSubject string, snc *nats.Conn) (first, plain time.Duration, err error) {
	arrived := make(chan time.Time, 1)
	sub, err := sch.Subscribe(ctx, func(m *client.Message) {
		if m.Epoch == 2 {
			arrived <- time.Now()
		}
	})
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if _, _, err := owner.c.Rekey(ctx, room); err != nil {
		return 0, 0, err
	}
	if err := pch.Refresh(ctx); err != nil {
		return 0, 0, err
	}
	t0 := time.Now()
	if _, err := pch.Publish(ctx, []byte("first of epoch 2")); err != nil {
		return 0, 0, err
	}
	select {
	case t := <-arrived:
		first = t.Sub(t0)
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
	plain, err = plainLatency(owner.nc, snc, plainSubject)
	return first, plain, err
}

// plainLatency is the median publish-to-delivery time of one plain message.
func plainLatency(pnc, snc *nats.Conn, subject string) (time.Duration, error) {
	sub, err := snc.SubscribeSync(subject)
	if err != nil {
		return 0, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := snc.Flush(); err != nil {
		return 0, err
	}
	var lat []time.Duration
	for range channelLatRuns {
		t0 := time.Now()
		if err := pnc.Publish(subject, []byte("plain")); err != nil {
			return 0, err
		}
		if _, err := sub.NextMsg(10 * time.Second); err != nil {
			return 0, err
		}
		lat = append(lat, time.Since(t0))
	}
	slices.Sort(lat)
	return lat[len(lat)/2], nil
}
