package e2e

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/store"
	"github.com/unibus/membership/subjects"
)

// TestCopyOfInFlightMutation: copies of one signed mutation reach a replica
// while the batch of the first copy is proposed on an R3 stream but not yet
// applied (its followers' links are held, so no quorum stores it). The
// other copies lose their compare-and-set against that batch and find no
// nonce record yet; they must wait for it and answer 208 with the original
// reply, never 409 (issue 12: "3 copies answered 409" in TestClusterFaults).
// Without the wait in runMutation, every losing copy answered 409 after
// maxConflictRetries quick re-plans, all within the hold.
func TestCopyOfInFlightMutation(t *testing.T) {
	servers, links := heldCluster(t, 3)
	js := natstest.JetStream(t, natstest.Connect(t, servers[0]))
	openR3(t, js)
	leader := streamLeaderOf(t, js, servers)
	// Every request below stays on the leader's node.
	nc := natstest.Connect(t, leader)
	st := openR3(t, natstest.JetStream(t, nc))
	adminID := bootstrapAdmin(t, st)
	// Workers: copies run at once, as on several replicas.
	const workers, copies = 4, 8
	snc := natstest.Connect(t, leader)
	svc, err := service.Start(snc, st, service.Config{Workers: workers, RequestTimeout: natstest.Within(3), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	if err := snc.Flush(); err != nil { // the endpoints are subscribed
		t.Fatal(err)
	}

	id := publicOf(t, "inflight")
	data := membertest.Signed(t, adminID.Sign, subjects.OpIdentityRegister,
		membertest.Body(t, api.RegisterRequest{Endpoint: id.Endpoint, SignKey: id.SignKey, XKey: id.XKey}))

	links.hold()
	replies := make(chan membertest.Reply, copies)
	for range copies {
		go func() {
			m, err := nc.Request(subjects.Subject(subjects.DefaultPrefix, subjects.OpIdentityRegister), data, natstest.Within(4))
			if err != nil {
				replies <- membertest.Reply{Code: -1, Text: err.Error()}
				return
			}
			replies <- membertest.ReplyOf(t, m)
		}()
	}
	// Hold until the losing copies have lost often enough that one of them
	// must have answered 409 without the wait: a copy answers 409 on its
	// 4th loss (maxConflictRetries) and at most workers-1 losers run at
	// once, so (workers-1)×4 losses mean at least one ran out.
	const lossesFor409 = 4
	natstest.Eventually(t, 2, "the losing copies lose against the batch in flight", func() error {
		if n := conflictsOf(t, svc, subjects.OpIdentityRegister); n < lossesFor409*(workers-1) {
			return fmt.Errorf("%d compare-and-sets lost", n)
		}
		return nil
	})
	links.release()

	codes := map[int]int{}
	var first []byte
	for range copies {
		r := <-replies
		codes[r.Code]++
		switch r.Code {
		case 0:
			first = r.Data
		case subjects.CodeAlreadyApplied:
		default:
			t.Errorf("a copy answered %d %s: %s", r.Code, r.Reason, r.Text)
		}
		if r.Code == subjects.CodeAlreadyApplied && first != nil && string(r.Data) != string(first) {
			t.Errorf("208 carries %x, the applied copy got %x", r.Data, first)
		}
	}
	if codes[0] != 1 || codes[subjects.CodeAlreadyApplied] != copies-1 {
		t.Fatalf("answers by code %v: want one 0 (applied) and %d × 208", codes, copies-1)
	}
}

// conflictsOf is the replica's count of lost compare-and-sets for op.
func conflictsOf(t *testing.T, svc *service.Service, op subjects.Op) int {
	n := 0
	for _, ep := range svc.Micro().Stats().Endpoints {
		if ep.Name == op.EndpointName() {
			n += natstest.StatInt(t, ep.Data, "batch_conflicts")
		}
	}
	return n
}

func openR3(t *testing.T, js jetstream.JetStream) *store.Store {
	t.Helper()
	var st *store.Store
	// A node the meta leader counts may not be current yet ("no suitable
	// peers for placement, peer offline"): open again until it is.
	natstest.Eventually(t, 3, "open the R3 store", func() (err error) {
		st, err = store.Open(natstest.Ctx(t, 1), js, store.Config{
			Bucket: subjects.DefaultBucket, KeysBucket: subjects.DefaultKeysBucket, Replicas: 3, MaxTTL: service.NonceTTL(service.DefaultSkew),
		})
		return err
	})
	return st
}

// streamLeaderOf returns the server that leads the state bucket's stream.
func streamLeaderOf(t *testing.T, js jetstream.JetStream, servers []*server.Server) *server.Server {
	t.Helper()
	var leader *server.Server
	natstest.Eventually(t, 3, "the state stream has a leader", func() error {
		s, err := js.Stream(natstest.Ctx(t, 1), "KV_"+subjects.DefaultBucket)
		if err != nil {
			return err
		}
		info, err := s.Info(natstest.Ctx(t, 1))
		if err != nil {
			return err
		}
		for _, srv := range servers {
			if info.Cluster != nil && srv.Name() == info.Cluster.Leader {
				leader = srv
				return nil
			}
		}
		return fmt.Errorf("leader %v", info.Cluster)
	})
	return leader
}

// heldCluster starts n in-process JetStream nodes whose every route passes
// through one of links' proxies, so a test can hold all traffic between
// them (no Raft proposal reaches a quorum) and release it.
func heldCluster(t *testing.T, n int) ([]*server.Server, *heldLinks) {
	t.Helper()
	links := &heldLinks{gate: make(chan struct{})}
	close(links.gate)
	proxies := make([]*holdProxy, n)
	for i := range proxies {
		proxies[i] = links.listen(t)
	}
	servers := make([]*server.Server, n)
	for i := range servers {
		opts := &server.Options{ServerName: fmt.Sprintf("h%d", i)}
		opts.Cluster.Name = "held"
		opts.Cluster.Host, opts.Cluster.Port = "127.0.0.1", -1
		// Gossip hands out the proxy's address, never the node's own, so
		// no route bypasses the proxies.
		opts.Cluster.Advertise = proxies[i].addr()
		for j := range n {
			if j != i {
				opts.Routes = append(opts.Routes, &url.URL{Scheme: "nats", Host: proxies[j].addr()})
			}
		}
		servers[i] = natstest.ServerWith(t, opts)
		proxies[i].target <- servers[i].ClusterAddr().String()
	}
	natstest.Eventually(t, 6, "the JetStream meta leader knows every node", func() error {
		for _, s := range servers {
			if s.JetStreamIsLeader() && len(s.JetStreamClusterPeers()) == n {
				return nil
			}
		}
		return errors.New("no meta leader with every peer")
	})
	return servers, links
}

// heldLinks holds or releases the bytes of every proxied route.
type heldLinks struct {
	mu   sync.Mutex
	gate chan struct{} // closed: traffic flows
}

func (h *heldLinks) hold() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.gate = make(chan struct{})
}

func (h *heldLinks) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	close(h.gate)
}

func (h *heldLinks) wait() {
	h.mu.Lock()
	g := h.gate
	h.mu.Unlock()
	<-g
}

// holdProxy forwards TCP connections to a node's cluster port.
type holdProxy struct {
	ln     net.Listener
	target chan string
	links  *heldLinks
}

func (h *heldLinks) listen(t *testing.T) *holdProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &holdProxy{ln: ln, links: h, target: make(chan string, 1)}
	t.Cleanup(func() { _ = ln.Close() })
	go p.serve()
	return p
}

func (p *holdProxy) addr() string { return p.ln.Addr().String() }

func (p *holdProxy) serve() {
	var target string
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		if target == "" {
			target = <-p.target
		}
		out, err := net.Dial("tcp", target)
		if err != nil {
			_ = in.Close()
			continue
		}
		go p.pipe(in, out)
		go p.pipe(out, in)
	}
}

// pipe copies src to dst, each chunk only while the links are not held.
func (p *holdProxy) pipe(dst, src net.Conn) {
	defer func() { _ = dst.Close(); _ = src.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.links.wait()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// bootstrapAdmin makes an admin identity and registers it in st.
func bootstrapAdmin(t *testing.T, st *store.Store) *identity.Identity {
	t.Helper()
	id, err := identity.New("admin")
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := id.Public()
	if _, err := service.Bootstrap(natstest.Ctx(t, 1), st, pub); err != nil {
		t.Fatalf("bootstrap admin: %v", err)
	}
	return id
}

// publicOf is a fresh identity's public keys.
func publicOf(t *testing.T, endpoint string) api.PublicKeys {
	t.Helper()
	id, err := identity.New(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := id.Public()
	return pub
}
