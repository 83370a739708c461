package service_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/subjects"
)

// TestWorkersStatsTruthful runs a replica with several micro instances and
// checks that each is a full member of the queue group and that micro's
// counts, summed over the instances, are exactly what was sent and refused.
func TestWorkersStatsTruthful(t *testing.T) {
	const workers = 3
	e := newEnv(t, service.Config{Workers: workers, RateLimit: -1})
	if n := len(e.svc.Instances()); n != workers {
		t.Fatalf("%d instances, want %d", n, workers)
	}
	pings := pingAll(t, e.nc)
	if pings != workers {
		t.Fatalf("%d instances answered $SRV.PING, want %d", pings, workers)
	}
	id := e.register(t, "worker-user")
	c := client.New(natstest.Connect(t, e.s), id, client.WithRetries(0))
	before := e.svc.EndpointCounts()[subjects.OpWhoami.EndpointName()]

	const ok, bad = 60, 9
	var wg sync.WaitGroup
	errs := make(chan error, ok)
	for i := 0; i < ok; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Whoami(natstest.Ctx(t, 2))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("whoami: %v", err)
		}
	}
	for i := 0; i < bad; i++ {
		request(t, e.nc, e.subject(subjects.OpWhoami), []byte("not an envelope")).expect(t, api.KindInvalid)
	}
	deadline := time.Now().Add(5 * time.Second)
	var after [2]int
	for {
		after = e.svc.EndpointCounts()[subjects.OpWhoami.EndpointName()]
		if after[0]-before[0] == ok+bad || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // micro counts once the handler returned
	}
	if got := [2]int{after[0] - before[0], after[1] - before[1]}; got != [2]int{ok + bad, bad} {
		t.Fatalf("micro counted %d requests %d errors, want %d and %d", got[0], got[1], ok+bad, bad)
	}
	busy := 0
	for _, in := range e.svc.Instances() {
		for _, ep := range in.Stats().Endpoints {
			if ep.Name == subjects.OpWhoami.EndpointName() && ep.NumRequests > 0 {
				busy++
			}
		}
	}
	if busy != workers {
		t.Errorf("%d of %d instances served whoami: the queue group does not spread requests", busy, workers)
	}
	// Custom data is process-wide and every instance shows it; host and
	// pid metadata tell which instances share a process.
	pid := strconv.Itoa(os.Getpid())
	for i, in := range e.svc.Instances() {
		if m := in.Info().Metadata; m["pid"] != pid || m["host"] == "" || m["version"] == "" || m["worker"] != strconv.Itoa(i) {
			t.Errorf("instance %d metadata %v: want this process's host, pid %s, version and worker %d", i, m, pid, i)
		}
		for _, ep := range in.Stats().Endpoints {
			if len(ep.Data) == 0 || string(ep.Data) == "null" || string(ep.Data) == "{}" {
				t.Errorf("instance %d endpoint %s: no custom data", i, ep.Name)
			}
		}
	}
}

// pingAll counts the membership instances answering a micro ping.
func pingAll(t *testing.T, nc *nats.Conn) int {
	t.Helper()
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(membertest.Control(t, micro.PingVerb), inbox, nil); err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		m, err := sub.NextMsg(500 * time.Millisecond)
		if errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) {
			return n
		}
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		if json.Unmarshal(m.Data, &v) == nil {
			n++
		}
	}
}

// TestWorkersConfig checks the default and the bounds of Config.Workers.
func TestWorkersConfig(t *testing.T) {
	for _, tc := range []struct {
		workers int
		want    int // 0: invalid
	}{{0, 1}, {1, 1}, {8, 8}, {-1, 0}, {service.MaxWorkers + 1, 0}} {
		c := service.Config{Workers: tc.workers}
		err := c.Validate()
		if (err == nil) != (tc.want != 0) {
			t.Errorf("Workers %d: error %v", tc.workers, err)
		}
		if err == nil && c.Workers != tc.want {
			t.Errorf("Workers %d: became %d, want %d", tc.workers, c.Workers, tc.want)
		}
	}
}

// TestWorkersStop stops every instance: nothing answers afterwards.
func TestWorkersStop(t *testing.T) {
	s := natstest.Server(t)
	nc := natstest.Connect(t, s)
	svc, err := service.Start(nc, membertest.Store(t, nc), service.Config{Workers: 4, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if n := pingAll(t, nc); n != 4 {
		t.Fatalf("%d instances before stop, want 4", n)
	}
	if err := svc.Stop(); err != nil {
		t.Fatal(err)
	}
	if n := pingAll(t, nc); n != 0 {
		t.Fatalf("%d instances after stop, want 0", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := nc.RequestWithContext(ctx, subjects.Subject(subjects.DefaultPrefix, subjects.OpWhoami), []byte("x")); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("request after stop: %v, want no responders", err)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
