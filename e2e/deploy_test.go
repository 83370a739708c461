package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/client"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/subjects"

	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
)

// deployDir holds the documented configuration (docs/deploy.md).
const deployDir = "../docs/deploy"

// clientInbox is the inbox prefix docs/deploy/accounts.conf grants the
// example client user.
const clientInbox = "_INBOX_client"

// deployment is a 3-node cluster started from docs/deploy/n*.conf, with the
// documented users' seeds.
type deployment struct {
	servers     []*server.Server
	urls        string
	serviceSeed string // file, for membershipd --nkey
	signingKey  string // file, for membershipd --service-key
	clientKey   nkeys.KeyPair
}

// startDeployment starts the documented cluster in-process: the very config
// files, with only the ports and store directories rewritten so that tests
// can run side by side (TestDeployScript runs the documented commands
// themselves). The users' public keys are set in the environment
// the files read them from.
func startDeployment(t *testing.T) *deployment {
	t.Helper()
	dir := t.TempDir()
	svcKP, _ := nkeys.CreateUser()
	cliKP, _ := nkeys.CreateUser()
	opKP, _ := nkeys.CreateUser()
	svcPub, _ := svcKP.PublicKey()
	cliPub, _ := cliKP.PublicKey()
	opPub, _ := opKP.PublicKey()
	t.Setenv("MEMBERSHIP_SERVICE_NKEY", svcPub)
	t.Setenv("MEMBERSHIP_CLIENT_NKEY", cliPub)
	t.Setenv("MEMBERSHIP_OPERATOR_NKEY", opPub)
	t.Setenv("MEMBERSHIP_STORE_DIR", filepath.Join(dir, "from-env")) // replaced per node below
	seed, _ := svcKP.Seed()
	d := &deployment{serviceSeed: filepath.Join(dir, "service-user.nk"), signingKey: writeServiceKey(t, dir), clientKey: cliKP}
	if err := os.WriteFile(d.serviceSeed, seed, 0o600); err != nil {
		t.Fatal(err)
	}

	const n = 3
	d.servers = startDocumentedCluster(t, deployDir, dir, n, func(o *server.Options) error {
		if !o.SyncAlways || !o.JetStream || o.Cluster.Name == "" || len(o.Routes) != n-1 {
			return fmt.Errorf("sync always %v, jetstream %v, cluster %q, %d routes",
				o.SyncAlways, o.JetStream, o.Cluster.Name, len(o.Routes))
		}
		return nil
	})
	var urls []string
	for _, s := range d.servers {
		urls = append(urls, s.ClientURL())
	}
	d.urls = strings.Join(urls, ",")
	return d
}

// clientConn connects as the documented client user, with its inbox
// prefix. errs receives the asynchronous errors the server sends, such as
// permission violations.
func (d *deployment) clientConn(t *testing.T) (*nats.Conn, <-chan error) {
	t.Helper()
	errs := make(chan error, 16)
	pub, _ := d.clientKey.PublicKey()
	nc, err := nats.Connect(d.urls, nats.Nkey(pub, d.clientKey.Sign), nats.CustomInboxPrefix(clientInbox),
		nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}))
	if err != nil {
		t.Fatalf("client user connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc, errs
}

// replica starts a membershipd that joins the deployment as the documented
// service user, creating it with the test kit's room shards
// (MEMBERSHIP_TEST_SHARDS).
func (d *deployment) replica(t *testing.T, adminFile, logPath string) *clusterNode {
	t.Helper()
	n := &clusterNode{name: filepath.Base(logPath), root: t, logPath: logPath, args: []string{
		"--server", d.urls, "--nkey", d.serviceSeed, "--service-key", d.signingKey, "--replicas", "3", "--bootstrap-admin", adminFile,
		"--shards", strconv.Itoa(membertest.Shards()),
	}}
	n.start(t)
	return n
}

// expectViolation waits for a permission violation on errs.
func expectViolation(t *testing.T, errs <-chan error, what string) {
	t.Helper()
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("%s: got %v, want a permission violation", what, err)
		}
	case <-time.After(natstest.Patience):
		t.Fatalf("%s: the server allowed it", what)
	}
}

// TestDeployDocs starts the 3-node cluster of docs/deploy, runs membershipd
// against it as the service user and checks what the client user may do:
// use the service, but neither listen on its subjects nor read its bucket.
func TestDeployDocs(t *testing.T) {
	d := startDeployment(t)
	dir := t.TempDir()
	adminFile := filepath.Join(dir, "admin.id")
	admin, _ := identity.New("admin")
	if err := identity.Write(adminFile, admin); err != nil {
		t.Fatal(err)
	}
	d.replica(t, adminFile, filepath.Join(dir, "replica"))

	ctx := natstest.Ctx(t, 12)
	nc, errs := d.clientConn(t)
	opts := []client.Option{client.WithRetries(10), client.WithBackoff(200 * time.Millisecond)}
	adm := client.New(nc, admin, opts...)
	alice, _ := identity.New("alice")
	bob, _ := identity.New("bob")
	for _, id := range []*identity.Identity{alice, bob} {
		pub, _ := id.Public()
		if _, err := adm.Register(ctx, pub, false); err != nil {
			t.Fatalf("client user: register %s: %v", id.Endpoint, err)
		}
	}
	_, key, err := client.New(nc, alice, opts...).CreateRoom(ctx, "ops", "chat.ops", []string{"bob"})
	if err != nil {
		t.Fatalf("client user: create room: %v", err)
	}
	got, _, err := client.New(nc, bob, opts...).Key(ctx, "ops", 0)
	if err != nil || string(got) != string(key) {
		t.Fatalf("client user: bob's key: %v", err)
	}
	// Discovery through $SRV works for clients.
	if _, err := nc.Request(membertest.Control(t, micro.PingVerb), nil, natstest.Patience); err != nil {
		t.Fatalf("client user: $SRV.PING: %v; replica log:\n%s", err, tail(filepath.Join(dir, "replica.1.log")))
	}

	// The bucket's streams are R3 as documented.
	svcConn := d.serviceConn(t)
	js, _ := jetstream.New(svcConn)
	st, err := js.Stream(ctx, "KV_"+subjects.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	if c := st.CachedInfo().Config; c.Replicas != 3 || c.AllowDirect {
		t.Fatalf("KV bucket has %d replicas, direct gets %v; want 3 and no direct gets (followers could answer them)", c.Replicas, c.AllowDirect)
	}
	reads, err := js.Stream(ctx, subjects.ReadClaimsStream(subjects.DefaultBucket))
	if err != nil {
		t.Fatal(err)
	}
	if c := reads.CachedInfo().Config; c.Replicas != 3 || c.Storage != jetstream.MemoryStorage || c.AllowDirect {
		t.Fatalf("read claims stream: %d replicas, %s storage, direct gets %v; want 3, memory, none", c.Replicas, c.Storage, c.AllowDirect)
	}
	if n := membertest.Shards(); n > 1 { // the service user may spread the room shards' leaders
		natstest.Eventually(t, 3, "room shard leaders on every node", func() error {
			led := map[string]bool{}
			for i := range n {
				s, err := js.Stream(ctx, "KV_"+subjects.RoomShardBucket(subjects.DefaultBucket, i))
				if err != nil {
					return err
				}
				if info, err := s.Info(ctx); err == nil && info.Cluster != nil && info.Cluster.Leader != "" {
					led[info.Cluster.Leader] = true
				}
			}
			if len(led) != min(n, 3) {
				return fmt.Errorf("%d room shards led by %v; replica log:\n%s", n, led, tail(filepath.Join(dir, "replica.1.log")))
			}
			return nil
		})
	}

	// What the client user must not do.
	if _, err := nc.QueueSubscribe(subjects.DefaultPrefix+".>", subjects.DefaultQueue, func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	expectViolation(t, errs, "client subscribes to the service subjects")
	if _, err := nc.Subscribe("$KV."+subjects.DefaultBucket+".>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	expectViolation(t, errs, "client subscribes to $KV.membership.>")
	if _, err := nc.Subscribe("_INBOX.>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	expectViolation(t, errs, "client subscribes to other inboxes")
	cjs, _ := jetstream.New(nc)
	sctx, scancel := context.WithTimeout(ctx, 3*time.Second)
	_, err = cjs.KeyValue(sctx, subjects.DefaultBucket)
	scancel()
	if err == nil {
		t.Fatal("client user bound to the KV bucket")
	}
	expectViolation(t, errs, "client calls the JetStream API")
	if err := nc.Publish("$KV."+subjects.DefaultBucket+".room.ops", []byte("x")); err != nil {
		t.Fatal(err)
	}
	expectViolation(t, errs, "client writes to $KV.membership.>")
}

// serviceConn connects as the service user (for inspection only).
func (d *deployment) serviceConn(t *testing.T) *nats.Conn {
	t.Helper()
	kp := seedFileKey(t, d.serviceSeed)
	pub, _ := kp.PublicKey()
	nc, err := nats.Connect(d.urls, nats.Nkey(pub, kp.Sign))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// writeServiceKey writes a fresh service key (an nkeys server seed, mode
// 0600) into dir and returns its path, for replicas that must share it.
func writeServiceKey(t *testing.T, dir string) string {
	t.Helper()
	kp, err := nkeys.CreateServer()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	path := filepath.Join(dir, "service-signing.nk")
	if err := os.WriteFile(path, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
