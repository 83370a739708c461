package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/membership/client"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/store"
	"github.com/unibus/membership/subjects"
)

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startDocumentedCluster starts one in-process node per config file
// (<confDir>/n1.conf … nN.conf) as the docs write them, with only the
// client and route ports and the store directory (dir/<server name>)
// rewritten, so that tests can run side by side. check refuses a file that
// no longer says what the docs promise. It returns once every node takes
// connections.
func startDocumentedCluster(t *testing.T, confDir, dir string, n int, check func(o *server.Options) error) []*server.Server {
	t.Helper()
	clientPorts, routePorts := make([]int, n), make([]int, n)
	for i := range n {
		clientPorts[i], routePorts[i] = freePort(t), freePort(t)
	}
	servers := make([]*server.Server, n)
	for i := range n {
		file := filepath.Join(confDir, fmt.Sprintf("n%d.conf", i+1))
		o, err := server.ProcessConfigFile(file)
		if err == nil {
			err = check(o)
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		o.Port, o.Cluster.Port = clientPorts[i], routePorts[i]
		var routes []string
		for j := range n {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", routePorts[j]))
			}
		}
		o.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		o.StoreDir = filepath.Join(dir, o.ServerName)
		o.NoLog, o.NoSigs = true, true
		if servers[i], err = server.NewServer(o); err != nil {
			t.Fatalf("n%d: %v", i+1, err)
		}
		servers[i].Start()
		t.Cleanup(func() { servers[i].Shutdown(); servers[i].WaitForShutdown() })
	}
	for i, s := range servers {
		if !s.ReadyForConnections(natstest.Within(3)) {
			t.Fatalf("n%d not ready", i+1)
		}
	}
	return servers
}

// nodeReadyTimeout bounds how long one membershipd process may take to
// become ready. It is generous: on a contended machine a node that rejoins
// a cluster waits for the JetStream meta leader and its streams to catch up.
// Nothing is measured against it.
var nodeReadyTimeout = natstest.Within(18)

// clusterNode is one membershipd process in cluster-node mode: a nats-server
// node of the JetStream cluster and a service replica connected to it. It
// can be killed, paused and started again from the same data directory.
type clusterNode struct {
	name      string
	args      []string
	clientURL string
	logPath   string
	// root is the test that owns the cluster: processes are stopped when
	// it ends, not when the subtest that restarted them does.
	root *testing.T

	mu     sync.Mutex
	proc   *nodeProc
	starts int
}

// nodeProc is one run of a node's process.
type nodeProc struct {
	cmd     *exec.Cmd
	exited  chan struct{}
	logPath string
}

// start runs the node's process and waits for its ready line.
func (n *clusterNode) start(t *testing.T) {
	t.Helper()
	if err := n.launch(t); err != nil {
		t.Fatal(err)
	}
}

// launch is start without t.Fatal, so that it can run on any goroutine.
func (n *clusterNode) launch(t *testing.T) error {
	n.mu.Lock()
	n.starts++
	logPath := fmt.Sprintf("%s.%d.log", n.logPath, n.starts)
	n.mu.Unlock()
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command(natstest.Build(t, membershipdPkg), n.args...)
	cmd.Env = append(os.Environ(), "NATS_URL=", "NATS_CONTEXT=")
	cmd.Stderr = logFile
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	p := &nodeProc{cmd: cmd, exited: make(chan struct{}), logPath: logPath}
	found := make(chan struct{}, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if readyLine.MatchString(sc.Text()) {
				found <- struct{}{}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
		logFile.Close()
		close(p.exited)
	}()
	owner := t
	if n.root != nil {
		owner = n.root
	}
	owner.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		<-p.exited
	})
	n.mu.Lock()
	n.proc = p
	n.mu.Unlock()
	select {
	case <-found:
		return nil
	case <-p.exited:
		return fmt.Errorf("node %s exited before it was ready; log:\n%s", n.name, tail(logPath))
	case <-time.After(nodeReadyTimeout):
		return fmt.Errorf("node %s not ready; log:\n%s", n.name, tail(logPath))
	}
}

// signal sends sig to the running process.
func (n *clusterNode) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to %s: %v", sig, n.name, err)
	}
}

// kill SIGKILLs the process (server and replica die at once, nothing is
// flushed) and waits for it to be gone.
func (n *clusterNode) kill(t *testing.T) {
	t.Helper()
	n.signal(t, syscall.SIGKILL)
	n.wait(t)
}

// wait waits for the process to exit.
func (n *clusterNode) wait(t *testing.T) {
	t.Helper()
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	select {
	case <-p.exited:
	case <-time.After(nodeReadyTimeout):
		t.Fatalf("node %s did not exit", n.name)
	}
}

// exitCode is the exit status of the last process, once it has exited.
func (n *clusterNode) exitCode() int {
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	<-p.exited
	return p.cmd.ProcessState.ExitCode()
}

// tail returns the last lines of a log file.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return strings.Join(lines, "\n")
}

// logTails is the end of every node's current log, for failure messages.
func (c *testCluster) logTails() string {
	var b strings.Builder
	for _, n := range c.nodes {
		n.mu.Lock()
		p := n.proc
		n.mu.Unlock()
		if p != nil {
			fmt.Fprintf(&b, "--- %s (%s):\n%s\n", n.name, p.logPath, tail(p.logPath))
		}
	}
	return b.String()
}

// testCluster is a cluster of membershipd processes sharing one admin.
type testCluster struct {
	nodes     []*clusterNode
	adminFile string
	admin     *identity.Identity
	dir       string
	shards    int // room shards, from a --shards flag among the extra flags (0: one)
}

// startCluster starts n membershipd processes that form a JetStream cluster
// over loopback routes, each also serving the membership service with R3
// buckets, all bootstrapping the same admin identity file. extra flags are
// given to every node.
func startCluster(t *testing.T, n int, extra ...string) ([]*clusterNode, string) {
	t.Helper()
	c := newCluster(t, n, extra...)
	return c.nodes, c.adminFile
}

// newCluster is startCluster returning the whole cluster.
func newCluster(t *testing.T, n int, extra ...string) *testCluster {
	t.Helper()
	dir := t.TempDir()
	adminFile := filepath.Join(dir, "admin.id")
	id, err := identity.New("admin")
	if err != nil {
		t.Fatal(err)
	}
	if err := identity.Write(adminFile, id); err != nil {
		t.Fatal(err)
	}
	serviceKey := writeServiceKey(t, dir)
	clientPorts, routePorts := make([]int, n), make([]int, n)
	for i := range n {
		clientPorts[i], routePorts[i] = freePort(t), freePort(t)
	}
	nodes := make([]*clusterNode, n)
	for i := range n {
		var routes []string
		for j := range n {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", routePorts[j]))
			}
		}
		name := fmt.Sprintf("n%d", i+1)
		nodes[i] = &clusterNode{name: name, root: t, clientURL: fmt.Sprintf("nats://127.0.0.1:%d", clientPorts[i]),
			logPath: filepath.Join(dir, name), args: append([]string{
				"--server-name", name,
				"--data-dir", filepath.Join(dir, name+"-data"),
				"--listen", fmt.Sprintf("127.0.0.1:%d", clientPorts[i]),
				"--cluster-listen", fmt.Sprintf("127.0.0.1:%d", routePorts[i]),
				"--routes", strings.Join(routes, ","),
				"--replicas", "3",
				"--bootstrap-admin", adminFile,
				"--service-key", serviceKey,
			}, extra...)}
	}
	c := &testCluster{nodes: nodes, adminFile: adminFile, admin: id, dir: dir}
	if i := slices.Index(extra, "--shards"); i >= 0 && i+1 < len(extra) {
		c.shards, _ = strconv.Atoi(extra[i+1])
	}
	c.startAll(t, nodes...)
	return c
}

// startAll starts nodes concurrently: a node only becomes ready once a
// quorum of the cluster runs.
func (c *testCluster) startAll(t *testing.T, nodes ...*clusterNode) {
	t.Helper()
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, node := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = node.launch(t)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// urls lists the client URLs of all nodes, for a client that should
// reconnect anywhere.
func (c *testCluster) urls() string {
	var u []string
	for _, n := range c.nodes {
		u = append(u, n.clientURL)
	}
	return strings.Join(u, ",")
}

// connect opens a connection that prefers node i and reconnects to any
// other node for as long as the test runs.
func (c *testCluster) connect(t *testing.T, i int) *nats.Conn {
	t.Helper()
	urls := []string{c.nodes[i].clientURL}
	for j, n := range c.nodes {
		if j != i {
			urls = append(urls, n.clientURL)
		}
	}
	nc, err := nats.Connect(strings.Join(urls, ","), nats.DontRandomize(), nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// kvStreams names the state's streams: the base bucket's and the room
// shards' (store/layout.go).
func (c *testCluster) kvStreams() []string {
	out := []string{"KV_" + subjects.DefaultBucket}
	for i := 0; c.shards > 1 && i < c.shards; i++ {
		out = append(out, "KV_"+subjects.RoomShardBucket(subjects.DefaultBucket, i))
	}
	return out
}

// loadStream is the stream the fault load's mutations commit in: the base
// bucket's, or with room shards the shard of the first fault room ("f1").
func (c *testCluster) loadStream() string {
	if c.shards <= 1 {
		return "KV_" + subjects.DefaultBucket
	}
	return "KV_" + subjects.RoomShardBucket(subjects.DefaultBucket, store.RoomShard("f1", c.shards))
}

// streamLeader asks JetStream which server leads the stream the load
// commits in (loadStream).
func (c *testCluster) streamLeader(t *testing.T, nc *nats.Conn) *clusterNode {
	t.Helper()
	js := natstest.JetStream(t, nc)
	deadline := time.Now().Add(nodeReadyTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), natstest.Within(0.5))
		var leader string
		st, err := js.Stream(ctx, c.loadStream())
		if err == nil {
			var info *jetstream.StreamInfo
			if info, err = st.Info(ctx); err == nil && info.Cluster != nil {
				leader = info.Cluster.Leader
			}
		}
		cancel()
		for _, n := range c.nodes {
			if n.name == leader {
				return n
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no stream leader for %s: %v", c.loadStream(), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitCurrent waits until every replica of the state's streams is current,
// so that the next fault starts from a healthy cluster.
func (c *testCluster) waitCurrent(t *testing.T, nc *nats.Conn) {
	t.Helper()
	for _, name := range c.kvStreams() {
		c.waitStreamCurrent(t, nc, name)
	}
}

// waitStreamCurrent waits until every replica of stream name is current.
func (c *testCluster) waitStreamCurrent(t *testing.T, nc *nats.Conn, name string) {
	t.Helper()
	js, _ := jetstream.New(nc)
	deadline := time.Now().Add(nodeReadyTimeout)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), natstest.Within(0.5))
		st, err := js.Stream(ctx, name)
		var info *jetstream.StreamInfo
		if err == nil {
			info, err = st.Info(ctx)
		}
		cancel()
		if err == nil && info.Cluster != nil && info.Cluster.Leader != "" && len(info.Cluster.Replicas) == len(c.nodes)-1 {
			current := true
			for _, r := range info.Cluster.Replicas {
				current = current && r.Current && !r.Offline
			}
			if current {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("replicas of %s did not become current", name)
}

// clientAt connects as id to url.
func clientAt(t *testing.T, url string, id *identity.Identity) *client.Client {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return client.New(nc, id, client.WithRetries(10), client.WithBackoff(200*time.Millisecond))
}

// registerNew creates identities with these names and registers them
// through admin.
func registerNew(ctx context.Context, t *testing.T, admin *client.Client, names ...string) map[string]*identity.Identity {
	t.Helper()
	ids := map[string]*identity.Identity{}
	for _, name := range names {
		id, err := identity.New(name)
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := id.Public()
		if _, err := admin.Register(ctx, pub, false); err != nil {
			t.Fatalf("register %s: %v", name, err)
		}
		ids[name] = id
	}
	return ids
}
