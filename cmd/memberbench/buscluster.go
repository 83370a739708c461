package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/callout"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/store"
	"github.com/unibus/membership/subjects"
)

// The bus's revocation on the documented 3-node cluster (issue 16): three
// nats-servers in this process, started from docs/deploy/callout's config
// files (only ports and store directories rewritten, keys made here and
// handed to the files through their environment variables), clustered on
// loopback, with service replicas — callout, revoker and service — on n1
// and n2. The endpoints connect through the callout, spread over the three
// nodes; each removed member is connected to n3, where no replica runs, so
// the replica that handles its removal is always on another node: the
// revoker must find it with CONNZ on every server and kick it on n3.
//
// It prints BUSCLUSTER revoke_p99_ms=N cut_p99_ms=N: revoke is the
// issue's figure (acknowledged room.remove to the last message the removed
// member receives), cut the whole cut (removal sent to connection closed).

// busClusterNodes is the size of the documented cluster.
const busClusterNodes = 3

// busClusterKeys are the keys the documented config names by variable.
type busClusterKeys struct {
	service, revoker, issuer, xkey nkeys.KeyPair
	signer                         nkeys.KeyPair // the replicas' shared service key (membershipd --service-key)
}

func newBusClusterKeys() (*busClusterKeys, error) {
	var k busClusterKeys
	var errs [5]error
	k.service, errs[0] = nkeys.CreateUser()
	k.revoker, errs[1] = nkeys.CreateUser()
	k.issuer, errs[2] = nkeys.CreateAccount()
	k.xkey, errs[3] = nkeys.CreateCurveKeys()
	k.signer, errs[4] = nkeys.CreateServer()
	return &k, errors.Join(errs[:]...)
}

// setEnv hands the public keys to the config files' variables
// (accounts.conf).
func (k *busClusterKeys) setEnv() error {
	for name, kp := range map[string]nkeys.KeyPair{
		"MEMBERSHIP_SERVICE_NKEY": k.service, "MEMBERSHIP_REVOKER_NKEY": k.revoker,
		"MEMBERSHIP_CALLOUT_ISSUER": k.issuer, "MEMBERSHIP_CALLOUT_XKEY": k.xkey,
	} {
		pub, _ := kp.PublicKey()
		if err := os.Setenv(name, pub); err != nil {
			return err
		}
	}
	return nil
}

// busCluster is the running cluster and its replicas.
type busCluster struct {
	servers []*server.Server
	keys    *busClusterKeys
	admin   *client.Client
	shutdowns
}

// freePorts returns n loopback ports free at the time of the call.
func freePorts(n int) ([]int, error) {
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		defer l.Close()
	}
	return ports, nil
}

// startBusCluster starts the cluster of confDir's n1..n3.conf in a new
// temporary directory (removed at shutdown).
func startBusCluster(ctx context.Context, confDir string) (*busCluster, error) {
	dir, err := os.MkdirTemp("", "memberbench-buscluster-")
	if err != nil {
		return nil, err
	}
	c := &busCluster{}
	c.onClose(func() { _ = os.RemoveAll(dir) })
	ports, err := freePorts(2 * busClusterNodes)
	if err == nil {
		if c.keys, err = newBusClusterKeys(); err == nil {
			err = c.keys.setEnv()
		}
	}
	if err != nil {
		c.shutdown()
		return nil, err
	}
	for i := range busClusterNodes {
		file := filepath.Join(confDir, fmt.Sprintf("n%d.conf", i+1))
		o, err := server.ProcessConfigFile(file)
		if err != nil {
			c.shutdown()
			return nil, fmt.Errorf("%s (run from the repository root or set --bus-cluster-conf): %w", file, err)
		}
		if o.AuthCallout == nil {
			c.shutdown()
			return nil, fmt.Errorf("%s: no auth_callout block", file)
		}
		var routes []string
		for j := range busClusterNodes {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", ports[busClusterNodes+j]))
			}
		}
		o.Port, o.Cluster.Port = ports[i], ports[busClusterNodes+i]
		o.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		o.StoreDir = filepath.Join(dir, o.ServerName)
		o.NoLog, o.NoSigs, o.MaxConn = true, true, 1<<16
		s, err := server.NewServer(o)
		if err != nil {
			c.shutdown()
			return nil, fmt.Errorf("n%d: %w", i+1, err)
		}
		s.Start()
		c.servers = append(c.servers, s)
		c.onClose(func() { s.Shutdown(); s.WaitForShutdown() })
	}
	for i, s := range c.servers {
		if !s.ReadyForConnections(30 * time.Second) {
			c.shutdown()
			return nil, fmt.Errorf("n%d not ready", i+1)
		}
	}
	if err := c.startReplicas(ctx); err != nil {
		c.shutdown()
		return nil, err
	}
	return c, nil
}

// busReplicaNodes are the nodes a service replica runs on: not n3, where
// the removed members connect.
var busReplicaNodes = []int{0, 1}

// startReplicas starts a replica on each of busReplicaNodes, one after the
// other (a starting replica learns the service key from a running one),
// bootstraps an admin and connects it through the callout to n1.
func (c *busCluster) startReplicas(ctx context.Context) error {
	adminID, _ := identity.New("admin")
	for k, i := range busReplicaNodes {
		st, err := c.startReplica(ctx, i)
		if err != nil {
			return fmt.Errorf("replica on n%d: %w", i+1, err)
		}
		if k == 0 {
			pub, _ := adminID.Public()
			if _, err := service.Bootstrap(ctx, st, pub); err != nil {
				return err
			}
		}
	}
	nc, err := c.dial(0, adminID)
	if err != nil {
		return err
	}
	c.admin = client.New(nc, adminID, client.WithTimeout(30*time.Second))
	return nil
}

// startReplica runs a replica on node i, as membershipd does with the
// documented command line: the service user, the revoker in SYS, the
// callout enforcing with the issuer and xkey, R3 buckets.
func (c *busCluster) startReplica(ctx context.Context, i int) (*store.Store, error) {
	svcNC, err := c.connectKey(i, c.keys.service)
	if err != nil {
		return nil, err
	}
	sysNC, err := c.connectKey(i, c.keys.revoker)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(svcNC)
	if err != nil {
		return nil, err
	}
	st, err := openClusterStore(ctx, js)
	if err != nil {
		return nil, err
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	co, err := callout.New(callout.Config{Mode: callout.Enforce, Issuer: c.keys.issuer, XKey: c.keys.xkey,
		Account: "MEMBERSHIP", Prefix: subjects.DefaultPrefix, Logger: quiet})
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	c.onClose(cancel)
	svc, err := service.Start(svcNC, st, service.Config{Revoke: co.NewRevoker(rctx, sysNC).Revoke,
		ServiceKey: c.keys.signer, RateLimit: -1, Workers: 4, Logger: quiet})
	if err != nil {
		return nil, err
	}
	c.onClose(func() { _ = svc.Stop() })
	if err := co.Serve(svcNC, svc); err != nil {
		return nil, err
	}
	c.onClose(func() { _ = co.Stop() })
	return st, nil
}

// openClusterStore opens the R3 buckets, waiting while the cluster elects
// its JetStream leaders.
func openClusterStore(ctx context.Context, js jetstream.JetStream) (*store.Store, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		octx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := store.Open(octx, js, store.Config{Bucket: subjects.DefaultBucket, KeysBucket: subjects.DefaultKeysBucket,
			Replicas: 3, MaxTTL: service.NonceTTL(service.DefaultSkew)})
		cancel()
		if err == nil || errors.Is(err, store.ErrBucketConfig) || time.Now().After(deadline) || ctx.Err() != nil {
			return st, err
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// connectKey connects to node i as a user of the config file.
func (c *busCluster) connectKey(i int, kp nkeys.KeyPair) (*nats.Conn, error) {
	pub, _ := kp.PublicKey()
	nc, err := nats.Connect(c.servers[i].ClientURL(), nats.Nkey(pub, kp.Sign), nats.MaxReconnects(-1))
	if err == nil {
		c.onClose(nc.Close)
	}
	return nc, err
}

// dial connects id with its key to node i, through the callout; closed
// with the cluster.
func (c *busCluster) dial(i int, id *identity.Identity, opts ...nats.Option) (*nats.Conn, error) {
	nc, err := nats.Connect(c.servers[i].ClientURL(), append(client.BusOptions(id), opts...)...)
	if err == nil {
		c.onClose(nc.Close)
	}
	return nc, err
}

// at is c.dial on node i.
func (c *busCluster) at(i int) busDial {
	return func(id *identity.Identity, opts ...nats.Option) (*nats.Conn, error) { return c.dial(i, id, opts...) }
}

// connectAll connects every peer, to the nodes in turn, a few at a time:
// the documented cluster refuses a connection its callout has not answered
// within 2 s (deploy.md), so a refused one is dialled again.
func (c *busCluster) connectAll(ctx context.Context, peers []*identity.Identity) error {
	return parallel(ctx, len(peers), 16, func(i int) error {
		var err error
		for try := 0; try < 5; try++ {
			if _, err = c.dial(i%busClusterNodes, peers[i]); err == nil {
				return nil
			}
		}
		return fmt.Errorf("bus cluster: %s not admitted: %w", peers[i].Endpoint, err)
	})
}

// busClusterBench runs the cluster measurement and prints BUSCLUSTER.
func busClusterBench(ctx context.Context, o options, out io.Writer) error {
	sc := busScaleOf(o)
	t0 := time.Now()
	c, err := startBusCluster(ctx, o.busClusterConf)
	if err != nil {
		return err
	}
	defer c.shutdown()
	ids, err := busRegister(ctx, c.admin, "busc", sc.endpoints+1)
	if err != nil {
		return err
	}
	hub, peers := ids[0], ids[1:]
	if err := c.connectAll(ctx, peers); err != nil {
		return err
	}
	fmt.Fprintf(out, "# bus cluster: 3 nodes (%s), replicas on n1 and n2; %d identities registered and connected through the callout to n1..n3 in %s\n",
		o.busClusterConf, len(ids), time.Since(t0).Round(time.Millisecond))
	hubNC, err := c.dial(0, hub)
	if err != nil {
		return err
	}
	owner := client.New(hubNC, hub, client.WithTimeout(30*time.Second))
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	// The removed members are the peers connected to n3 (every third).
	var victims []*identity.Identity
	for i := 2; i < len(peers) && len(victims) < sc.revokes; i += busClusterNodes {
		victims = append(victims, peers[i])
	}
	rv, err := busRevokes(ctx, owner, "rvc", key, victims, c.at(2), c.at(0))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "# bus cluster: %d removals of members connected to n3, owner on n1, %d endpoints connected: revoke (acknowledged removal to last message) p50 %s p99 %s; "+
		"removal sent to connection cut p50 %s p99 %s; room created to first message p50 %s p99 %s\n",
		len(rv.cut), len(peers), ms(pctOf(rv.revoke, 0.50)), ms(pctOf(rv.revoke, 0.99)), ms(pctOf(rv.cut, 0.50)), ms(pctOf(rv.cut, 0.99)),
		ms(pctOf(rv.grant, 0.50)), ms(pctOf(rv.grant, 0.99)))
	fmt.Fprintf(out, "BUSCLUSTER revoke_p99_ms=%d cut_p99_ms=%d\n", pctOf(rv.revoke, 0.99).Milliseconds(), pctOf(rv.cut, 0.99).Milliseconds())
	return nil
}
