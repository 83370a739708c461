package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/membership/client"
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

// clusterNode is how to start one node of a membershipd cluster.
type clusterNode struct {
	name      string
	args      []string
	clientURL string
	daemon    *daemon
}

// startCluster starts n membershipd processes that form a JetStream cluster
// over loopback routes, each also serving the membership service with R3
// buckets, all bootstrapping the same admin identity file.
func startCluster(t *testing.T, n int) ([]*clusterNode, string) {
	t.Helper()
	dir := t.TempDir()
	adminFile := filepath.Join(dir, "admin.id")
	id, err := client.NewIdentity("admin")
	if err != nil {
		t.Fatal(err)
	}
	if err := client.WriteIdentity(adminFile, id); err != nil {
		t.Fatal(err)
	}
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
		nodes[i] = &clusterNode{name: name, clientURL: fmt.Sprintf("nats://127.0.0.1:%d", clientPorts[i]), args: []string{
			"--server-name", name,
			"--data-dir", filepath.Join(dir, name),
			"--listen", fmt.Sprintf("127.0.0.1:%d", clientPorts[i]),
			"--cluster-listen", fmt.Sprintf("127.0.0.1:%d", routePorts[i]),
			"--routes", strings.Join(routes, ","),
			"--replicas", "3",
			"--bootstrap-admin", adminFile,
		}}
	}
	var wg sync.WaitGroup
	for _, node := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			node.daemon = startDaemon(t, node.args...)
		}()
	}
	wg.Wait()
	return nodes, adminFile
}

// clientAt connects as the identity in file to url.
func clientAt(t *testing.T, url string, id *client.Identity) *client.Client {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return client.New(nc, id, client.WithRetries(10), client.WithBackoff(200*time.Millisecond))
}

// TestClusterQuickstart forms a 3-node cluster of membershipd processes,
// runs the quickstart across nodes, kills one node and keeps going.
func TestClusterQuickstart(t *testing.T) {
	start := time.Now()
	nodes, adminFile := startCluster(t, 3)
	t.Logf("cluster ready in %s", time.Since(start))
	defer func() { t.Logf("test took %s", time.Since(start)) }()
	adminID, err := client.LoadIdentity(adminFile)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := clientAt(t, nodes[0].clientURL, adminID)
	ids := map[string]*client.Identity{}
	for _, name := range []string{"alice", "bob"} {
		id, _ := client.NewIdentity(name)
		pub, _ := id.Public()
		if _, err := admin.Register(ctx, pub, false); err != nil {
			t.Fatalf("register %s: %v", name, err)
		}
		ids[name] = id
	}
	alice := clientAt(t, nodes[1].clientURL, ids["alice"])
	_, key, err := alice.CreateRoom(ctx, "ops", "chat.ops", []string{"bob"})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	bob := clientAt(t, nodes[2].clientURL, ids["bob"])
	got, _, err := bob.Key(ctx, "ops", 0)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("bob key = %x, %v; want %x", got, err, key)
	}

	t.Logf("quickstart done at %s", time.Since(start))
	// One node (its server and its service replica) dies: the other two
	// keep quorum and serve.
	_ = nodes[0].daemon.cmd.Process.Kill()
	_ = nodes[0].daemon.cmd.Wait()
	carol, _ := client.NewIdentity("carol")
	pub, _ := carol.Public()
	admin2 := clientAt(t, nodes[1].clientURL, adminID)
	if _, err := admin2.Register(ctx, pub, false); err != nil {
		t.Fatalf("register with a node down: %v", err)
	}
	if _, err := alice.AddMember(ctx, "ops", "carol"); err != nil {
		t.Fatalf("add with a node down: %v", err)
	}
	got, _, err = clientAt(t, nodes[2].clientURL, carol).Key(ctx, "ops", 0)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("carol key = %x, %v", got, err)
	}
}
