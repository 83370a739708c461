package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/unibus/membership/callout"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/subjects"
)

// busWait bounds each wait of the bus tests for something that happens at
// once when it works (a kick, a refusal, a delivery).
var busWait = natstest.Patience

// busNode is one nats-server whose connections are authorized by a callout
// replica in this process, as membershipd --bus runs it embedded.
type busNode struct {
	s       *server.Server
	keys    *callout.EmbeddedKeys
	callout *callout.Callout
	admin   *client.Client
}

// startBusNode starts the server, the service with its revoker and the
// callout in mode, and bootstraps an admin that connects with its key.
func startBusNode(t *testing.T, mode callout.Mode) *busNode {
	t.Helper()
	opts := &server.Options{}
	keys, err := callout.ConfigureEmbedded(opts)
	if err != nil {
		t.Fatal(err)
	}
	b := &busNode{s: natstest.ServerWith(t, opts), keys: keys}
	svcNC := natstest.Connect(t, b.s, nkeyOpt(keys.Service))
	sysNC := natstest.Connect(t, b.s, nkeyOpt(keys.System))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	co, err := callout.New(callout.Config{Mode: mode, Issuer: keys.Issuer, Account: callout.EmbeddedAccount,
		Prefix: subjects.DefaultPrefix, Logger: log, ObserveEvery: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	rev := co.NewRevoker(ctx, sysNC)
	st := membertest.Store(t, svcNC)
	svc, err := service.Start(svcNC, st, service.Config{Revoke: rev.Revoke, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	if err := co.Serve(svcNC, svc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = co.Stop() })
	b.callout = co
	if mode == callout.Observe {
		go rev.Observe(ctx, svc)
	}

	id, _ := identity.New("admin")
	pub, _ := id.Public()
	bctx, bcancel := context.WithTimeout(context.Background(), busWait)
	defer bcancel()
	if _, err := service.Bootstrap(bctx, st, pub); err != nil {
		t.Fatal(err)
	}
	b.admin = client.New(b.connect(t, id), id)
	return b
}

func nkeyOpt(kp interface {
	PublicKey() (string, error)
	Sign([]byte) ([]byte, error)
}) nats.Option {
	pub, _ := kp.PublicKey()
	return nats.Nkey(pub, kp.Sign)
}

// connect connects as id with its key, failing the test if refused.
func (b *busNode) connect(t *testing.T, id *identity.Identity, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := b.dial(id, opts...)
	if err != nil {
		t.Fatalf("%s connect: %v", id.Endpoint, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func (b *busNode) dial(id *identity.Identity, opts ...nats.Option) (*nats.Conn, error) {
	return nats.Connect(b.s.ClientURL(), append(client.BusOptions(id), opts...)...)
}

// register makes a registered identity for each name.
func (b *busNode) register(t *testing.T, names ...string) map[string]*identity.Identity {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), busWait)
	defer cancel()
	return registerNew(ctx, t, b.admin, names...)
}

// member returns a client of id on its own bus connection. It never
// resends: an answer lost to a kick fails the test.
func (b *busNode) member(t *testing.T, id *identity.Identity) *client.Client {
	return client.New(b.connect(t, id), id, client.WithRetries(0))
}

// errCollector gathers a connection's asynchronous errors.
func errCollector() (nats.Option, <-chan error) {
	errs := make(chan error, 16)
	return nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errs <- err:
		default:
		}
	}), errs
}

// TestBusRefusesUnknownAndDisabled: only an active identity connects, and
// only with the key it signs with; a disable kicks its connections and
// they cannot come back.
func TestBusRefusesUnknownAndDisabled(t *testing.T) {
	b := startBusNode(t, callout.Enforce)
	ids := b.register(t, "alice")
	stranger, _ := identity.New("alice") // same id, other key
	if _, err := b.dial(stranger); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("unknown key: %v, want an authorization violation", err)
	}
	if _, err := nats.Connect(b.s.ClientURL()); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("no credentials: %v, want an authorization violation", err)
	}
	kicked := make(chan struct{}, 1)
	b.connect(t, ids["alice"], nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { kicked <- struct{}{} }))
	ctx, cancel := context.WithTimeout(context.Background(), busWait)
	defer cancel()
	if _, err := b.admin.Disable(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	// Kicked at once; every reconnection is refused.
	wait(t, kicked, "alice kicked")
	if _, err := b.dial(ids["alice"]); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("disabled identity: %v, want an authorization violation", err)
	}
	if n := b.callout.Stats(); n.Kicked < 1 || n.Refused < 3 {
		t.Fatalf("stats %+v: want a kick and three refusals", n)
	}
}

// wait waits for a value on ch, at most busWait.
func wait[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(busWait):
		t.Fatalf("%s: not within %s", what, busWait)
		panic("unreachable")
	}
}

// cliSub runs `nats sub --raw subject` as id (its nkey file and inbox
// prefix) and streams its stdout and stderr lines.
func (b *busNode) cliSub(t *testing.T, id *identity.Identity, subject string) (stdout, stderr <-chan string) {
	t.Helper()
	seed, _ := id.Sign.Seed()
	nkFile := filepath.Join(t.TempDir(), id.Endpoint+".nk")
	if err := os.WriteFile(nkFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	cmd := exec.Command(natstest.NatsCLI(t), "--server", b.s.ClientURL(), "--nkey", nkFile,
		"--inbox-prefix", subjects.BusInboxPrefix(id.Endpoint), "sub", "--raw", subject)
	cmd.Env = append(os.Environ(), "NATS_URL=", "NATS_CONTEXT=", "HOME="+home, "XDG_CONFIG_HOME="+home, "NO_COLOR=1")
	out, _ := cmd.StdoutPipe()
	errOut, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return lines(out), lines(errOut)
}

// lines streams r's lines on a channel.
func lines(r io.Reader) <-chan string {
	ch := make(chan string, 256)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			ch <- sc.Text()
		}
		close(ch)
	}()
	return ch
}

// waitLine waits for a line containing want, at most busWait.
func waitLine(t *testing.T, ch <-chan string, want, what string) {
	t.Helper()
	deadline := time.After(busWait)
	var seen []string
	for {
		select {
		case l, ok := <-ch:
			if !ok {
				t.Fatalf("%s: stream ended before %q; saw %q", what, want, seen)
			}
			if strings.Contains(l, want) {
				return
			}
			seen = append(seen, l)
		case <-deadline:
			t.Fatalf("%s: no %q within %s; saw %q", what, want, busWait, seen)
		}
	}
}

// TestBusRemovedMemberCLI: a member subscribed with the nats CLI and its
// nkey receives the room's messages until the owner removes it; it is then
// kicked, its resubscription is a permissions violation, and nothing more
// reaches it. A non-member's publish is refused by NATS.
func TestBusRemovedMemberCLI(t *testing.T) {
	b := startBusNode(t, callout.Enforce)
	ids := b.register(t, "owner", "bob", "eve")
	owner := b.member(t, ids["owner"])
	if _, _, err := owner.CreateRoom(natstest.Ctx(t, 1), "r1", "chat.r1", []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	ownerNC := b.connect(t, ids["owner"]) // after the create: it has the room
	out, errs := b.cliSub(t, ids["bob"], "chat.r1")
	// The subscription is live once a message published after it arrives.
	deliver := func(msg string) {
		t.Helper()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		deadline := time.After(busWait)
		for {
			if err := ownerNC.Publish("chat.r1", []byte(msg)); err != nil {
				t.Fatal(err)
			}
			select {
			case l := <-out:
				if l == msg {
					return
				}
			case <-tick.C:
			case <-deadline:
				t.Fatalf("%q not delivered to bob", msg)
			}
		}
	}
	deliver("before")

	// A registered non-member may not publish on the room's subject.
	eveErr, eveErrs := errCollector()
	eve := b.connect(t, ids["eve"], eveErr)
	if err := eve.Publish("chat.r1", []byte("from eve")); err != nil {
		t.Fatal(err)
	}
	if err := wait(t, eveErrs, "eve's publish refused"); !errors.Is(err, nats.ErrPermissionViolation) {
		t.Fatalf("eve's publish: %v, want a permissions violation", err)
	}

	if _, err := owner.RemoveMember(natstest.Ctx(t, 1), "r1", "bob"); err != nil {
		t.Fatal(err)
	}
	// Kicked: the CLI reconnects with bob's new permissions and its
	// resubscription is refused.
	waitLine(t, errs, "Permissions Violation for Subscription to \"chat.r1\"", "bob resubscribes")
	// The server holds no subscription of bob's on the room any more.
	conns, err := b.s.Connz(&server.ConnzOptions{User: callout.UserPrefix + "bob", Subscriptions: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range conns.Conns {
		if slices.Contains(c.Subs, "chat.r1") {
			t.Fatalf("bob's connection %d still subscribes to chat.r1", c.Cid)
		}
	}
	// What the owner publishes now reaches the owner's own subscription,
	// and not bob.
	mine, err := ownerNC.SubscribeSync("chat.r1")
	if err != nil {
		t.Fatal(err)
	}
	if err := ownerNC.Publish("chat.r1", []byte("after")); err != nil {
		t.Fatal(err)
	}
	if _, err := mine.NextMsg(busWait); err != nil {
		t.Fatal(err)
	}
	for len(out) > 0 {
		if l := <-out; l == "after" {
			t.Fatal("bob received a message after his removal")
		}
	}
}

// TestBusFailsClosed: with no callout replica answering, new connections
// are refused; connections admitted before keep their permissions.
func TestBusFailsClosed(t *testing.T) {
	b := startBusNode(t, callout.Enforce)
	ids := b.register(t, "owner", "bob")
	owner := b.member(t, ids["owner"])
	if _, _, err := owner.CreateRoom(natstest.Ctx(t, 1), "r1", "chat.r1", []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	bob := b.connect(t, ids["bob"])
	sub, err := bob.SubscribeSync("chat.r1")
	if err != nil {
		t.Fatal(err)
	}
	if err := bob.Flush(); err != nil {
		t.Fatal(err)
	}
	ownerNC := b.connect(t, ids["owner"])
	if err := b.callout.Stop(); err != nil {
		t.Fatal(err)
	}
	// The client waits longer than the server's auth timeout, so that it
	// hears the refusal rather than timing out itself.
	if _, err := b.dial(ids["bob"], nats.Timeout(busWait)); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("connect with no callout: %v, want an authorization violation", err)
	}
	if err := ownerNC.Publish("chat.r1", []byte("still here")); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.NextMsg(busWait); err != nil || string(m.Data) != "still here" {
		t.Fatalf("existing connection: %v", err)
	}
}

// TestBusObserve: observe mode admits what enforce would refuse, as an open
// bus does, and counts it: a connection with an unknown key, and a
// non-member's subscription to a room (a member's is not counted).
func TestBusObserve(t *testing.T) {
	b := startBusNode(t, callout.Observe)
	ids := b.register(t, "owner", "eve")
	owner := b.member(t, ids["owner"])
	if _, _, err := owner.CreateRoom(natstest.Ctx(t, 1), "r1", "chat.r1", nil); err != nil {
		t.Fatal(err)
	}
	stranger, _ := identity.New("stranger")
	b.connect(t, stranger) // unknown: admitted, counted
	ownerNC := b.connect(t, ids["owner"])
	eve := b.connect(t, ids["eve"])
	for _, nc := range []*nats.Conn{ownerNC, eve} {
		if _, err := nc.SubscribeSync("chat.r1"); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(busWait)
	for n := b.callout.Stats(); n.WouldDenySub < 1; n = b.callout.Stats() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("stats %+v: eve's subscription not counted", n)
		}
	}
	if n := b.callout.Stats(); n.WouldDenySub != 1 || n.WouldDenyConnect != 1 || n.Refused != 0 {
		t.Fatalf("stats %+v: want exactly eve's subscription and the stranger's connection", n)
	}
}

// TestBusRevocations: each change that takes a room or the bus from an
// endpoint disconnects its connection at once, before the change is
// answered: leave, room delete, a new signing key (and remove and disable,
// above).
func TestBusRevocations(t *testing.T) {
	for _, tc := range []struct {
		name   string
		revoke func(t *testing.T, b *busNode, owner, bob *client.Client) error
	}{
		{"leave", func(t *testing.T, b *busNode, _, bob *client.Client) error {
			_, err := bob.Leave(natstest.Ctx(t, 1), "r1")
			return err
		}},
		{"delete", func(t *testing.T, b *busNode, owner, _ *client.Client) error {
			_, err := owner.DeleteRoom(natstest.Ctx(t, 1), "r1")
			return err
		}},
		{"new signing key", func(t *testing.T, b *busNode, _, _ *client.Client) error {
			fresh, _ := identity.New("bob")
			pub, _ := fresh.Public()
			_, err := b.admin.Register(natstest.Ctx(t, 1), pub, false)
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startBusNode(t, callout.Enforce)
			ids := b.register(t, "owner", "bob")
			owner := b.member(t, ids["owner"])
			if _, _, err := owner.CreateRoom(natstest.Ctx(t, 1), "r1", "chat.r1", []string{"bob"}); err != nil {
				t.Fatal(err)
			}
			kicked := make(chan struct{}, 1)
			watched := b.connect(t, ids["bob"], nats.DisconnectErrHandler(func(*nats.Conn, error) {
				select {
				case kicked <- struct{}{}:
				default:
				}
			}))
			if _, err := watched.SubscribeSync("chat.r1"); err != nil {
				t.Fatal(err)
			}
			if err := watched.Flush(); err != nil {
				t.Fatal(err)
			}
			if err := tc.revoke(t, b, owner, b.member(t, ids["bob"])); err != nil {
				t.Fatal(err)
			}
			// Revocation runs before the answer: the kick is already on its way.
			wait(t, kicked, "bob's connection kicked")
		})
	}
}

// TestBusRefusedAtOnceOtherReplica: a disable or a new signing key that
// one replica commits is honoured at once by the callout of another, which
// learns it only through its watch: the first connection after the
// acknowledgement is refused, in every round. (The callout answers from its
// room index only once the index has applied every shard's last sequence
// as read after the connection began; an answer from a watch-fed cache
// that merely looked fresh would readmit within the watch's lag.)
func TestBusRefusedAtOnceOtherReplica(t *testing.T) {
	b := startBusNode(t, callout.Enforce) // replica A: the admin's requests
	nc := natstest.Connect(t, b.s, nkeyOpt(b.keys.Service))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	other, err := service.Start(nc, membertest.Store(t, nc), service.Config{Prefix: "unibus.replicab.v1", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Stop() })
	co, err := callout.New(callout.Config{Mode: callout.Enforce, Issuer: b.keys.Issuer, Account: callout.EmbeddedAccount,
		Prefix: subjects.DefaultPrefix, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.callout.Stop(); err != nil { // replica B alone answers the callout
		t.Fatal(err)
	}
	if err := co.Serve(nc, other); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = co.Stop() })
	for i := range 10 {
		name := fmt.Sprintf("v%d", i)
		id := b.register(t, name)[name]
		nc := b.connect(t, id) // admitted: B sees the registration at once too
		nc.Close()
		if i%2 == 0 {
			if _, err := b.admin.Disable(natstest.Ctx(t, 1), name); err != nil {
				t.Fatal(err)
			}
		} else {
			fresh, _ := identity.New(name)
			pub, _ := fresh.Public()
			if _, err := b.admin.Register(natstest.Ctx(t, 1), pub, false); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := b.dial(id, nats.Timeout(busWait)); !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("round %d: connect right after the acknowledged change: %v, want an authorization violation", i, err)
		}
	}
	if n := co.Stats(); n.Refused != 10 || n.Admitted != 10 {
		t.Fatalf("replica B's callout %+v: want 10 admitted, 10 refused", n)
	}
}
