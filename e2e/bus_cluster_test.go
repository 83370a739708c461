package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/unibus/membership/client"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/internal/natstest"
)

// busDeployDir holds the documented configuration of a cluster whose bus
// enforces membership (docs/deploy.md, "The bus enforces membership").
const busDeployDir = "../docs/deploy/callout"

// busCluster is the 3-node cluster of docs/deploy/callout, with the keys
// made by the commands of docs/deploy.md and its membershipd command line.
type busCluster struct {
	servers []*server.Server
	dir     string   // the keys' files, as the commands name them
	command []string // membershipd's arguments, from docs/deploy.md
}

// busDeploySection reads the code blocks of docs/deploy.md's section "The
// bus enforces membership": the key block and the membershipd line.
func busDeploySection(t *testing.T) (keyBlock string, membershipd []string) {
	t.Helper()
	doc, err := os.ReadFile("../docs/deploy.md")
	if err != nil {
		t.Fatal(err)
	}
	loc := regexp.MustCompile(`(?m)^## \d+\. The bus enforces membership$`).FindIndex(doc)
	if loc == nil {
		t.Fatal("docs/deploy.md has no section \"The bus enforces membership\"")
	}
	sec := string(doc[loc[1]:])
	if next := strings.Index(sec, "\n## "); next >= 0 {
		sec = sec[:next]
	}
	// bash, not sh: TestDeployScript runs the sh blocks on another cluster.
	for _, b := range strings.Split(sec, "```bash\n")[1:] {
		b, _, _ = strings.Cut(b, "```")
		if strings.HasPrefix(b, "membershipd ") {
			membershipd = strings.Fields(b)[1:]
		} else if strings.Contains(b, "nats auth nkey gen") {
			keyBlock = b
		}
	}
	if keyBlock == "" || membershipd == nil {
		t.Fatalf("docs/deploy.md, the bus section: key block %q, membershipd %q", keyBlock, membershipd)
	}
	return keyBlock, membershipd
}

// runKeyBlock runs the documented key commands in dir with bash, the nats
// CLI on its PATH, and sets the variables it exports for the servers'
// config files.
func runKeyBlock(t *testing.T, dir, block string) {
	t.Helper()
	bin := t.TempDir()
	if err := os.Symlink(natstest.NatsCLI(t), filepath.Join(bin, "nats")); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "-c", "set -euo pipefail\n"+block+"env\n")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "NATS_URL=", "NATS_CONTEXT=", "HOME="+dir)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("the key block of docs/deploy.md: %v", err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && strings.HasPrefix(k, "MEMBERSHIP_") {
			t.Setenv(k, v)
		}
	}
}

// startBusCluster starts the documented cluster in-process from the very
// config files, only ports and store directories rewritten, with keys made
// by the documented commands.
func startBusCluster(t *testing.T) *busCluster {
	t.Helper()
	c := &busCluster{dir: t.TempDir()}
	keyBlock, command := busDeploySection(t)
	runKeyBlock(t, c.dir, keyBlock)
	c.command = command
	c.servers = startDocumentedCluster(t, busDeployDir, c.dir, 3, func(o *server.Options) error {
		if o.AuthCallout == nil || o.AuthCallout.XKey == "" || o.SystemAccount != "SYS" || !o.SyncAlways {
			return fmt.Errorf("callout %+v, system account %q, sync always %v", o.AuthCallout, o.SystemAccount, o.SyncAlways)
		}
		return nil
	})
	return c
}

// replica starts a membershipd with the documented command line, connected
// to node i only.
func (c *busCluster) replica(t *testing.T, i int, name string) *clusterNode {
	t.Helper()
	args := []string{"--bootstrap-admin", filepath.Join(c.dir, "admin.identity")}
	for j := 0; j < len(c.command); j++ {
		a := c.command[j]
		switch {
		case a == "--nats-url": // this node only
			args = append(args, a, c.servers[i].ClientURL())
			j++
		case strings.HasSuffix(a, ".nk"):
			args = append(args, filepath.Join(c.dir, a))
		default:
			args = append(args, a)
		}
	}
	n := &clusterNode{name: name, root: t, logPath: filepath.Join(c.dir, name), args: args}
	n.start(t)
	return n
}

// dial connects id to node i with its key.
func (c *busCluster) dial(i int, id *identity.Identity, opts ...nats.Option) (*nats.Conn, error) {
	return nats.Connect(c.servers[i].ClientURL(), append(client.BusOptions(id), opts...)...)
}

func (c *busCluster) connect(t *testing.T, i int, id *identity.Identity, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := c.dial(i, id, opts...)
	if err != nil {
		t.Fatalf("%s connect to n%d: %v", id.Endpoint, i+1, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// TestBusCluster runs the documented cluster of docs/deploy/callout with
// membershipd enforcing the bus: a member connected to n3 is kicked by the
// replica on n1 that handles its removal, and resubscribing is refused;
// with every callout replica killed, new connections are refused and
// existing ones keep what they had.
func TestBusCluster(t *testing.T) {
	c := startBusCluster(t)
	r1 := c.replica(t, 0, "replica-n1")
	adminID, err := identity.Load(filepath.Join(c.dir, "admin.identity"))
	if err != nil {
		t.Fatal(err)
	}
	admin := client.New(c.connect(t, 1, adminID), adminID)
	ids := registerNew(natstest.Ctx(t, 1), t, admin, "owner", "bob", "carol")
	owner := client.New(c.connect(t, 1, ids["owner"]), ids["owner"])
	if _, _, err := owner.CreateRoom(natstest.Ctx(t, 1), "r1", "chat.r1", []string{"bob", "carol"}); err != nil {
		t.Fatal(err)
	}

	// bob on n3, carol on n2: both receive what the owner publishes on n2.
	bobErr, bobErrs := errCollector()
	kicked := make(chan struct{}, 4)
	bob := c.connect(t, 2, ids["bob"], bobErr, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { kicked <- struct{}{} }))
	bobSub, err := bob.SubscribeSync("chat.r1")
	if err != nil {
		t.Fatal(err)
	}
	carol := c.connect(t, 1, ids["carol"])
	carolSub, err := carol.SubscribeSync("chat.r1")
	if err != nil {
		t.Fatal(err)
	}
	ownerNC := c.connect(t, 1, ids["owner"])
	publishUntil(t, ownerNC, "chat.r1", bobSub, carolSub)

	// The only replica, on n1, handles the removal; bob is on n3.
	if _, err := owner.RemoveMember(natstest.Ctx(t, 1), "r1", "bob"); err != nil {
		t.Fatal(err)
	}
	wait(t, kicked, "bob kicked from n3")
	if err := wait(t, bobErrs, "bob's resubscription"); !errors.Is(err, nats.ErrPermissionViolation) {
		t.Fatalf("bob's resubscription: %v, want a permissions violation", err)
	}
	if err := ownerNC.Publish("chat.r1", []byte("after")); err != nil {
		t.Fatal(err)
	}
	nextData(t, carolSub, "after")
	for {
		m, err := bobSub.NextMsg(0)
		if err != nil {
			break
		}
		if string(m.Data) == "after" {
			t.Fatal("bob received a message after his removal")
		}
	}

	// Kill every callout replica: new connections are refused; carol's
	// existing connection still receives.
	r2 := c.replica(t, 1, "replica-n2")
	r1.kill(t)
	r2.kill(t)
	// Refused at the 2 s authorization timeout; nats.go may instead give up
	// on the server's first PING, due at the same moment (deploy.md).
	if nc, err := c.dial(0, ids["carol"]); err == nil {
		nc.Close()
		t.Fatal("a connection was admitted with every callout replica down")
	} else if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(err.Error(), "got 'PING'") {
		t.Fatalf("connect with every replica down: %v, want a refusal", err)
	}
	if err := ownerNC.Publish("chat.r1", []byte("still")); err != nil {
		t.Fatal(err)
	}
	nextData(t, carolSub, "still")
}

// publishUntil publishes on subject until every sub received a message:
// the subscriptions have propagated through the cluster.
func publishUntil(t *testing.T, nc *nats.Conn, subject string, subs ...*nats.Subscription) {
	t.Helper()
	deadline := time.Now().Add(busWait)
	for _, sub := range subs {
		for {
			if err := nc.Publish(subject, []byte("ping")); err != nil {
				t.Fatal(err)
			}
			if _, err := sub.NextMsg(20 * time.Millisecond); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no delivery on %s within %s", subject, busWait)
			}
		}
	}
}

// nextData waits for a message with data want on sub, skipping the pings
// of publishUntil.
func nextData(t *testing.T, sub *nats.Subscription, want string) {
	t.Helper()
	for {
		m, err := sub.NextMsg(busWait)
		if err != nil {
			t.Fatalf("waiting for %q on %s: %v", want, sub.Subject, err)
		}
		if string(m.Data) == want {
			return
		}
	}
}
