package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/unibus/membership/client"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
)

const memberctlPkg = "github.com/unibus/membership/cmd/memberctl"

// ctl runs the memberctl binary in a working directory against one server.
type ctl struct {
	t      *testing.T
	bin    string
	dir    string
	server string
}

// ctlResult is one memberctl run.
type ctlResult struct {
	stdout, stderr string
	code           int
}

// newCtl builds memberctl, starts a server with the service, and writes a
// bootstrapped admin identity file to dir/admin.id.
func newCtl(t *testing.T) (*ctl, *server.Server) {
	t.Helper()
	bin := natstest.Build(t, memberctlPkg)
	s := natstest.Server(t)
	membertest.Service(t, s, service.Config{})
	c := &ctl{t: t, bin: bin, dir: t.TempDir(), server: s.ClientURL()}

	id, err := identity.New("admin")
	if err != nil {
		t.Fatal(err)
	}
	if err := identity.Write(c.path("admin.id"), id); err != nil {
		t.Fatal(err)
	}
	pub, err := id.Public()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), natstest.Patience)
	defer cancel()
	if _, err := service.Bootstrap(ctx, membertest.Store(t, natstest.Connect(t, s)), pub); err != nil {
		t.Fatalf("bootstrap admin: %v", err)
	}
	return c, s
}

func (c *ctl) path(name string) string { return filepath.Join(c.dir, name) }

// runEnv runs memberctl with --server set and the environment cleared of
// memberctl's variables, plus env.
func (c *ctl) runEnv(env []string, args ...string) ctlResult {
	c.t.Helper()
	return c.runBare(env, append([]string{"--server", c.server}, args...)...)
}

// runBare runs memberctl like runEnv, without adding --server.
func (c *ctl) runBare(env []string, args ...string) ctlResult {
	c.t.Helper()
	cmd := exec.Command(c.bin, args...)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "NATS_URL=", "NATS_CREDS=", "NATS_NKEY=", "NATS_CONTEXT=", "NATS_USER=", "NATS_PASSWORD=", "NATS_TOKEN=",
		"NATS_INBOX_PREFIX=", "NATS_CERT=", "NATS_KEY=", "NATS_CA=", "MEMBERCTL_IDENTITY=",
		"MEMBERCTL_PREFIX=", "MEMBERCTL_TIMEOUT=", "XDG_CONFIG_HOME="+c.path("xdg"))
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := ctlResult{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		c.t.Fatalf("run memberctl %v: %v", args, err)
	}
	return r
}

// run is runEnv without extra environment.
func (c *ctl) run(args ...string) ctlResult {
	c.t.Helper()
	return c.runEnv(nil, args...)
}

// ok runs memberctl, requires exit 0 and decodes --json output into v.
func (c *ctl) ok(v any, args ...string) {
	c.t.Helper()
	r := c.run(args...)
	if r.code != 0 {
		c.t.Fatalf("memberctl %s: exit %d\nstderr: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	if v != nil {
		if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
			c.t.Fatalf("memberctl %s: output is not JSON: %v\n%s", strings.Join(args, " "), err, r.stdout)
		}
	}
}

// fails runs memberctl and requires exit code want and, if line is set, a
// first stderr line matching it.
func (c *ctl) fails(want int, line *regexp.Regexp, args ...string) ctlResult {
	c.t.Helper()
	r := c.run(args...)
	if r.code != want {
		c.t.Fatalf("memberctl %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, want, r.stdout, r.stderr)
	}
	first, _, _ := strings.Cut(r.stderr, "\n")
	if line != nil && !line.MatchString(first) {
		c.t.Fatalf("memberctl %s: stderr %q does not match %s", strings.Join(args, " "), first, line)
	}
	return r
}

// keygen makes NAME.id and NAME.pub in the working directory and checks
// their modes and that the public file holds no seed.
func (c *ctl) keygen(name string) {
	c.t.Helper()
	var out struct {
		Endpoint     string `json:"endpoint"`
		SignKey      string `json:"sign_key"`
		XKey         string `json:"xkey"`
		IdentityFile string `json:"identity_file"`
		PubFile      string `json:"pub_file"`
	}
	c.ok(&out, "keygen", "--endpoint", name, "--json")
	if out.IdentityFile != name+".id" || out.PubFile != name+".pub" {
		c.t.Fatalf("keygen wrote %s and %s", out.IdentityFile, out.PubFile)
	}
	for file, mode := range map[string]os.FileMode{name + ".id": 0o600, name + ".pub": 0o644} {
		fi, err := os.Stat(c.path(file))
		if err != nil {
			c.t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			c.t.Fatalf("%s has mode %v, want %v", file, fi.Mode().Perm(), mode)
		}
	}
	id, err := identity.Load(c.path(name + ".id"))
	if err != nil {
		c.t.Fatalf("load %s.id: %v", name, err)
	}
	pub, _ := id.Public()
	if pub.Endpoint != out.Endpoint || pub.SignKey != out.SignKey || pub.XKey != out.XKey {
		c.t.Fatalf("keygen printed %+v, identity file holds %+v", out, pub)
	}
	data, err := os.ReadFile(c.path(name + ".pub"))
	if err != nil {
		c.t.Fatal(err)
	}
	seedS, _ := id.Sign.Seed()
	seedX, _ := id.XKey.Seed()
	if bytes.Contains(data, seedS) || bytes.Contains(data, seedX) || bytes.Contains(data, []byte("seed")) {
		c.t.Fatalf("%s.pub holds a seed:\n%s", name, data)
	}
	for _, want := range []string{"endpoint: " + name, "sign-key: " + pub.SignKey, "xkey: " + pub.XKey} {
		if !bytes.Contains(data, []byte(want+"\n")) {
			c.t.Fatalf("%s.pub lacks %q:\n%s", name, want, data)
		}
	}
}

type ctlRoom struct {
	ID        string `json:"id"`
	Subject   string `json:"subject"`
	Owner     string `json:"owner"`
	Epoch     uint64 `json:"epoch"`
	RekeyOwed bool   `json:"rekey_owed"`
	Members   int    `json:"members"`
}

type ctlKey struct {
	Room  string `json:"room"`
	Epoch uint64 `json:"epoch"`
	Key   string `json:"key"`
}

var ctlForbiddenKey = regexp.MustCompile(`^memberctl: room\.key: 403 forbidden: \S`)

// TestMemberctlQuickstart drives the README quickstart through the binary:
// keygen, registration by the admin, a room whose key both members open
// alike, and removal with a rekey that locks the removed member out.
func TestMemberctlQuickstart(t *testing.T) {
	c, _ := newCtl(t)
	admin := []string{"--identity", "admin.id"}
	alice := []string{"--identity", "alice.id"}
	bob := []string{"--identity", "bob.id"}

	c.keygen("alice")
	c.keygen("bob")
	before, _ := os.ReadFile(c.path("alice.id"))
	c.fails(3, regexp.MustCompile(`^memberctl: keygen: .*alice\.id exists`), "keygen", "--endpoint", "alice")
	if after, _ := os.ReadFile(c.path("alice.id")); !bytes.Equal(before, after) {
		t.Fatal("keygen overwrote an identity file")
	}

	var who struct {
		Endpoint string `json:"endpoint"`
		Admin    bool   `json:"admin"`
	}
	c.ok(&who, append(admin, "--json", "whoami")...)
	if who.Endpoint != "admin" || !who.Admin {
		t.Fatalf("admin whoami = %+v", who)
	}
	for _, name := range []string{"alice", "bob"} {
		var reg struct {
			Endpoint string `json:"endpoint"`
			Admin    bool   `json:"admin"`
			Disabled bool   `json:"disabled"`
		}
		c.ok(&reg, append(admin, "--json", "identity", "register", "--pub", name+".pub")...)
		if reg.Endpoint != name || reg.Admin || reg.Disabled {
			t.Fatalf("registered %s = %+v", name, reg)
		}
	}

	var room ctlRoom
	c.ok(&room, append(alice, "--json", "room", "create", "ops", "--subject", "chat.ops", "--member", "bob")...)
	if room.ID != "ops" || room.Subject != "chat.ops" || room.Owner != "alice" || room.Epoch != 1 || room.Members != 2 {
		t.Fatalf("created room = %+v", room)
	}

	// Global flags after the command, as the README shows.
	var bobKey, aliceKey ctlKey
	c.ok(&bobKey, append(bob, "room", "key", "ops", "--json")...)
	c.ok(&aliceKey, append(alice, "room", "key", "ops", "--json")...)
	if k, err := hex.DecodeString(bobKey.Key); err != nil || len(k) != client.RoomKeySize {
		t.Fatalf("bob's key %q is not %d bytes of hex", bobKey.Key, client.RoomKeySize)
	}
	if bobKey != aliceKey || bobKey.Room != "ops" || bobKey.Epoch != 1 {
		t.Fatalf("bob opened %+v, alice %+v; want the same epoch-1 key", bobKey, aliceKey)
	}

	var members struct {
		Room    string `json:"room"`
		Members []struct {
			Endpoint string `json:"endpoint"`
			XKey     string `json:"xkey"`
		} `json:"members"`
		Next string `json:"next"`
	}
	c.ok(&members, append(alice, "room", "members", "ops", "--json")...)
	var names []string
	for _, m := range members.Members {
		names = append(names, m.Endpoint)
	}
	slices.Sort(names)
	if members.Room != "ops" || !slices.Equal(names, []string{"alice", "bob"}) || members.Next != "" {
		t.Fatalf("members = %+v", members)
	}

	var removed struct {
		Removed string  `json:"removed"`
		Rekeyed bool    `json:"rekeyed"`
		Room    ctlRoom `json:"room"`
	}
	c.ok(&removed, append(alice, "room", "remove", "ops", "bob", "--json")...)
	if removed.Removed != "bob" || !removed.Rekeyed || removed.Room.Epoch != 2 || removed.Room.Members != 1 || removed.Room.RekeyOwed {
		t.Fatalf("remove = %+v", removed)
	}
	c.fails(1, ctlForbiddenKey, append(bob, "room", "key", "ops")...)
	var newKey ctlKey
	c.ok(&newKey, append(alice, "room", "key", "ops", "--json")...)
	if newKey.Epoch != 2 || newKey.Key == aliceKey.Key {
		t.Fatalf("alice's key after removal = %+v, want a new epoch-2 key", newKey)
	}

	// Added back, bob opens the current key but none from before he rejoined.
	c.ok(&room, append(alice, "--json", "room", "add", "ops", "bob")...)
	if room.Members != 2 || room.Epoch != 2 {
		t.Fatalf("after add: %+v", room)
	}
	c.ok(&bobKey, append(bob, "--json", "room", "key", "ops")...)
	if bobKey != newKey {
		t.Fatalf("bob opened %+v after rejoining, want %+v", bobKey, newKey)
	}
	c.fails(1, ctlForbiddenKey, append(bob, "room", "key", "ops", "--epoch", "1")...)

	// --no-rekey leaves the rekey owed until `room rekey`.
	c.ok(&removed, append(alice, "--json", "room", "remove", "--no-rekey", "ops", "bob")...)
	if removed.Rekeyed || !removed.Room.RekeyOwed || removed.Room.Epoch != 2 {
		t.Fatalf("remove --no-rekey = %+v", removed)
	}
	c.ok(&room, append(alice, "--json", "room", "rekey", "ops")...)
	if room.Epoch != 3 || room.RekeyOwed || room.Members != 1 {
		t.Fatalf("rekey = %+v", room)
	}

	var mine struct {
		Rooms []ctlRoom `json:"rooms"`
	}
	c.ok(&mine, append(alice, "--json", "room", "mine")...)
	if len(mine.Rooms) != 1 || mine.Rooms[0].ID != "ops" || mine.Rooms[0].Epoch != 3 {
		t.Fatalf("alice's rooms = %+v", mine)
	}
	c.ok(&mine, append(bob, "--json", "room", "mine")...)
	if len(mine.Rooms) != 0 {
		t.Fatalf("bob's rooms after removal = %+v", mine)
	}
}

// TestMemberctlErrors checks exit codes and the error line for usage,
// service and local failures.
func TestMemberctlErrors(t *testing.T) {
	c, _ := newCtl(t)
	c.keygen("alice")
	c.keygen("carol") // never registered
	c.ok(nil, "--identity", "admin.id", "identity", "register", "--pub", "alice.pub")

	// A copy of alice's identity that the group may read.
	data, err := os.ReadFile(c.path("alice.id"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.path("open.id"), data, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(c.path("open.id"), 0o640); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		env  []string
		args []string
		code int
		line string // first stderr line, a regexp
	}{
		{"unknown command", nil, []string{"frobnicate"}, 2, `^memberctl: unknown command`},
		{"unknown subcommand", nil, []string{"room", "frobnicate", "ops"}, 2, `^memberctl: unknown command`},
		{"unknown flag", nil, []string{"--identity", "alice.id", "room", "get", "ops", "--bogus"}, 2, `^memberctl: room get: `},
		{"missing argument", nil, []string{"--identity", "alice.id", "room", "key"}, 2, `^memberctl: room key: missing arguments`},
		{"no identity", nil, []string{"whoami"}, 2, `^memberctl: .*--identity`},
		{"register both forms", nil, []string{"--identity", "admin.id", "identity", "register", "--pub", "carol.pub", "--endpoint", "carol"}, 2, `^memberctl: identity register: `},
		{"group-readable identity", nil, []string{"--identity", "open.id", "whoami"}, 3, `^memberctl: load identity: `},
		{"missing identity file", nil, []string{"--identity", "nobody.id", "whoami"}, 3, `^memberctl: load identity: `},
		{"identity file as --pub", nil, []string{"--identity", "admin.id", "identity", "register", "--pub", "carol.id"}, 3, `^memberctl: read --pub `},
		{"no service on prefix", nil, []string{"--identity", "alice.id", "--prefix", "nobody.here", "--timeout", "1s", "whoami"}, 3, `^memberctl: identity\.whoami: `},
		{"unregistered signer", nil, []string{"--identity", "carol.id", "whoami"}, 1, `^memberctl: identity\.whoami: 401 unauthenticated: `},
		{"not an admin", nil, []string{"--identity", "alice.id", "identity", "list"}, 1, `^memberctl: identity\.list: 403 forbidden: `},
		{"no such room", nil, []string{"--identity", "alice.id", "room", "get", "nope"}, 1, `^memberctl: room\.get: 404 not_found: `},
		{"member not registered", nil, []string{"--identity", "alice.id", "room", "create", "r1", "--subject", "chat.r1", "--member", "carol"}, 1, `^memberctl: room\.create: 404 not_found: look up carol: `},
		{"identity from env", []string{"MEMBERCTL_IDENTITY=alice.id"}, []string{"whoami"}, 0, ``},
		{"bad timeout env", []string{"MEMBERCTL_TIMEOUT=soon"}, []string{"whoami"}, 2, `^memberctl: MEMBERCTL_TIMEOUT`},
		{"help", nil, []string{"help"}, 0, ``},
		{"-h", nil, []string{"-h"}, 0, ``},
		{"command -h", nil, []string{"room", "remove", "-h"}, 0, ``},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := c.runEnv(tc.env, tc.args...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, tc.code, r.stdout, r.stderr)
			}
			first, _, _ := strings.Cut(r.stderr, "\n")
			if tc.line != "" && !regexp.MustCompile(tc.line).MatchString(first) {
				t.Fatalf("stderr %q does not match %s", first, tc.line)
			}
			if tc.code == 0 && r.stderr != "" {
				t.Fatalf("exit 0 with stderr %q", r.stderr)
			}
		})
	}

	// A service error carries a hint for the common kinds.
	if r := c.run("--identity", "carol.id", "whoami"); !strings.Contains(r.stderr, "\nhint: ") {
		t.Fatalf("401 without a hint: %q", r.stderr)
	}
	// help documents every command and the exit codes.
	help := c.run("help").stdout
	for _, want := range []string{"keygen", "whoami", "identity register", "identity disable", "identity enable",
		"identity get", "identity list", "room create", "room get", "room members", "room key", "room add",
		"room remove", "room rekey", "room leave", "room delete", "room mine", "Exit codes", "--json", "--timeout"} {
		if !strings.Contains(help, want) {
			t.Errorf("help lacks %q", want)
		}
	}
}
