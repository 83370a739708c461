package natstest

import (
	"errors"
	"net"
	"net/url"
	"strconv"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// Cluster starts n JetStream nodes in this process, routed to each other on
// loopback, and waits for a meta leader. The nodes start together (a
// clustered node opens its route listener only once JetStream found its
// peers), on route ports chosen beforehand.
func Cluster(t testing.TB, n int) []*server.Server {
	t.Helper()
	routes, ports := make([]*url.URL, n), make([]int, n)
	for i := range routes {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		routes[i], ports[i] = &url.URL{Scheme: "nats", Host: l.Addr().String()}, l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	nodes := make([]*server.Server, n)
	for i := range n {
		s, err := server.NewServer(&server.Options{
			ServerName: "n" + strconv.Itoa(i+1), Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
			NoLog: true, NoSigs: true, Routes: routes,
			Cluster: server.ClusterOpts{Name: "natstest", Host: "127.0.0.1", Port: ports[i]},
		})
		if err != nil {
			t.Fatal(err)
		}
		s.Start()
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
		nodes[i] = s
	}
	for _, s := range nodes {
		if !s.ReadyForConnections(Within(3)) {
			t.Fatalf("cluster node %s not ready", s.Name())
		}
	}
	Eventually(t, 3, "the cluster elects a JetStream meta leader", func() error {
		for _, s := range nodes {
			if s.JetStreamIsLeader() {
				return nil
			}
		}
		return errors.New("no meta leader")
	})
	return nodes
}
