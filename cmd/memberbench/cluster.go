package main

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/membership/store"
)

// Cluster mode (--cluster 3): the deployment is a JetStream cluster of
// in-process nats-servers routed to each other on loopback, its buckets
// replicated R3 (R5 with five nodes), the room shards' stream leaders
// spread over the nodes as membershipd spreads them (store.SpreadLeaders),
// the clients' connections spread over the nodes. The one-shard deployment
// of mutate1 is created on the same cluster with the same replication, so
// mutate_shards_vs_one compares one stream leader with n shards' leaders
// on different nodes under the same load.

// replicas is how many copies the run's buckets keep: 1, or the cluster's
// size (3 or 5).
func (o options) replicas() int {
	if o.cluster > 1 {
		return o.cluster
	}
	return 1
}

// startCluster starts o.cluster nodes with file storage under dir and
// returns their client URLs, comma-separated (the clients pick nodes at
// random).
func (e *env) startCluster(dir string, base *server.Options) (string, error) {
	n := e.o.cluster
	if n != 3 && n != 5 {
		return "", fmt.Errorf("--cluster %d: want 0 (one node), 3 or 5", n)
	}
	routePorts := make([]int, n)
	for i := range routePorts {
		p, err := freePort()
		if err != nil {
			return "", err
		}
		routePorts[i] = p
	}
	var urls []string
	for i := range n {
		opts := *base
		opts.ServerName = fmt.Sprintf("mb%d", i+1)
		opts.StoreDir = filepath.Join(dir, opts.ServerName)
		opts.Cluster = server.ClusterOpts{Name: "memberbench", Host: "127.0.0.1", Port: routePorts[i]}
		var routes []string
		for j, p := range routePorts {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
			}
		}
		opts.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		s, err := server.NewServer(&opts)
		if err != nil {
			return "", err
		}
		s.Start()
		e.closers = append(e.closers, func() { s.Shutdown(); s.WaitForShutdown() })
		e.nodes = append(e.nodes, s)
	}
	for _, s := range e.nodes {
		if !s.ReadyForConnections(30 * time.Second) {
			return "", fmt.Errorf("cluster node %s did not start", s.Name())
		}
		urls = append(urls, s.ClientURL())
	}
	return strings.Join(urls, ","), nil
}

// freePort is a loopback port free at the time of the call.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// openClustered opens the store; on a cluster, once the nodes have
// elected their JetStream meta leader (until then the JetStream API does
// not answer).
func openClustered(ctx context.Context, js jetstream.JetStream, cfg store.Config) (*store.Store, error) {
	for cfg.Replicas > 1 {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := js.AccountInfo(actx)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("no JetStream meta leader: %w", err)
		}
	}
	return store.Open(ctx, js, cfg)
}

// spreadLeaders balances the room shards' leaders over the nodes
// ([store.Store.SpreadLeaders], as membershipd does for a new deployment),
// again after each round's moves have taken effect, until a round finds
// nothing to move, for at most maxSpreadRounds rounds and spreadWait. Like
// membershipd it does not fail when they cannot be spread (an election that
// lands elsewhere, a node slow to catch up): it says so, and the leaders
// are printed where they are. It returns where the leaders are, shard by
// shard.
func (e *env) spreadLeaders(ctx context.Context, js jetstream.JetStream, st *store.Store) ([]string, error) {
	leaderOf := func(ctx context.Context, stream string) (string, error) {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return "", err
		}
		info, err := s.Info(ctx)
		if err != nil || info.Cluster == nil {
			return "", err
		}
		return info.Cluster.Leader, nil
	}
	if err := e.spreadRounds(ctx, st, leaderOf); err != nil {
		fmt.Fprintf(e.out, "# cluster: spreading the room shards' leaders did not finish (%v); measured where they are\n", err)
	}
	var where []string
	for _, sh := range st.Shards()[1:] {
		l, err := leaderOf(ctx, "KV_"+sh.Name())
		if err != nil {
			return nil, err
		}
		where = append(where, l)
	}
	return where, nil
}

const (
	maxSpreadRounds = 3
	spreadWait      = 30 * time.Second
)

// spreadRounds runs the rounds of spreadLeaders.
func (e *env) spreadRounds(ctx context.Context, st *store.Store, leaderOf func(context.Context, string) (string, error)) error {
	ctx, cancel := context.WithTimeout(ctx, spreadWait)
	defer cancel()
	for range maxSpreadRounds {
		moves, err := st.SpreadLeaders(ctx) // waits for leaders with current followers
		if err != nil || len(moves) == 0 {
			return err
		}
		for _, m := range moves { // until the old leader has handed over
			for {
				l, err := leaderOf(ctx, m.Stream)
				if err != nil {
					return err
				}
				if l != "" && l != m.From {
					break
				}
				select {
				case <-ctx.Done():
					return fmt.Errorf("leader of %s: %w", m.Stream, ctx.Err())
				case <-time.After(100 * time.Millisecond):
				}
			}
		}
	}
	return nil
}
