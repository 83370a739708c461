package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/unibus/membership/client"
	"github.com/unibus/membership/e2e/natstest"
	"github.com/unibus/membership/service/api"
)

// TestMemberctlContextAndDefaultIdentity uses memberctl the way nats users
// do: servers from a NATS context (--context, NATS_CONTEXT, or the one
// chosen with `nats context select` when no connection option is given),
// --server overriding a context's URL as in the nats CLI, and the identity
// from the default path.
func TestMemberctlContextAndDefaultIdentity(t *testing.T) {
	c, _ := newCtl(t)
	xdg := c.path("xdg")
	ctxDir := filepath.Join(xdg, "nats", "context")
	if err := os.MkdirAll(ctxDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ctxDir, "local.json"), []byte(`{"url": "`+c.server+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		env  []string
	}{
		{"flag", []string{"--context", "local", "--identity", "admin.id", "whoami"}, nil},
		{"env", []string{"--identity", "admin.id", "whoami"}, []string{"NATS_CONTEXT=local"}},
		{"server over context", []string{"--context", "nowhere", "--server", c.server, "--identity", "admin.id", "whoami"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "server over context" {
				if err := os.WriteFile(filepath.Join(ctxDir, "nowhere.json"), []byte(`{"url": "nats://127.0.0.1:1"}`), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			r := c.runBare(tc.env, tc.args...)
			if r.code != 0 || !strings.Contains(r.stdout, "admin") {
				t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
			}
		})
	}
	t.Run("selected", func(t *testing.T) {
		// Without any connection option, no context is used until one is
		// selected; then it is, as by the nats CLI.
		cfg := filepath.Join(xdg, "nats", "context.txt")
		if err := os.WriteFile(cfg, []byte("nowhere\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if r := c.runBare(nil, "--identity", "admin.id", "whoami"); r.code != exitLocal || !strings.Contains(r.stderr, "selected NATS context") {
			t.Fatalf("selected context with no server: exit %d\nstderr: %s", r.code, r.stderr)
		}
		if err := os.WriteFile(cfg, []byte("local\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if r := c.runBare(nil, "--identity", "admin.id", "whoami"); r.code != 0 || !strings.Contains(r.stdout, "admin") {
			t.Fatalf("selected context: exit %d\nstderr: %s", r.code, r.stderr)
		}
		if err := os.Remove(cfg); err != nil {
			t.Fatal(err)
		}
	})

	// Without --identity, the default path is used once it exists.
	c.fails(exitUsage, nil, "whoami")
	if err := os.MkdirAll(filepath.Join(xdg, "unibus"), 0o700); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(c.path("admin.id"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(xdg, "unibus", "identity.id"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := c.run("whoami"); r.code != 0 || !strings.Contains(r.stdout, "admin") {
		t.Fatalf("whoami with the default identity: exit %d: %s", r.code, r.stderr)
	}
}

// TestMemberctlCompletion loads the generated bash completion into a real
// bash and completes a command and a subcommand.
func TestMemberctlCompletion(t *testing.T) {
	c, _ := newCtl(t)
	r := c.run("completion", "bash")
	if r.code != 0 {
		t.Fatalf("completion bash: exit %d: %s", r.code, r.stderr)
	}
	script := c.path("c.sh")
	if err := os.WriteFile(script, []byte(r.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		words []string
		want  string
	}{
		{[]string{"memberctl", "ro"}, "room"},
		{[]string{"memberctl", "room", "rek"}, "rekey"},
		{[]string{"memberctl", "--identity", "a.id", "identity", "dis"}, "disable"},
	} {
		probe := "source " + script + "; COMP_WORDS=(" + strings.Join(tc.words, " ") + "); COMP_CWORD=" +
			strconv.Itoa(len(tc.words)-1) + "; _memberctl; echo \"${COMPREPLY[*]}\""
		out, err := exec.Command("bash", "-c", probe).CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		if strings.TrimSpace(string(out)) != tc.want {
			t.Errorf("completing %v = %q, want %q", tc.words, strings.TrimSpace(string(out)), tc.want)
		}
	}
	if r := c.run("completion", "fish"); r.code != exitUsage {
		t.Fatalf("completion fish: exit %d, want %d", r.code, exitUsage)
	}
	if r := c.run("completion", "zsh"); r.code != 0 || !strings.Contains(r.stdout, "bashcompinit") {
		t.Fatalf("completion zsh: exit %d", r.code)
	}
}

// memberctl exit codes: a usage error, a connection or local error.
const (
	exitUsage = 2
	exitLocal = 3
)

// TestMemberctlTerminal runs memberctl in a pseudo-terminal (util-linux
// script) on a room large enough to show progress, and checks the screen:
// the progress lines of a rekey and of listing all members, then the result.
func TestMemberctlTerminal(t *testing.T) {
	c, s := newCtl(t)
	ctx, cancel := context.WithTimeout(context.Background(), natstest.Within(6))
	defer cancel()
	admin := clientFromFile(t, s, c.path("admin.id"))
	alice, err := client.NewIdentity("alice")
	if err != nil {
		t.Fatal(err)
	}
	if err := client.WriteIdentity(c.path("alice.id"), alice); err != nil {
		t.Fatal(err)
	}
	members := []string{}
	pubs := []api.PublicKeys{}
	for i := range 150 {
		id, _ := client.NewIdentity(fmt.Sprintf("m%03d", i))
		if i == 0 {
			id = alice
		} else {
			members = append(members, id.Endpoint)
		}
		pub, _ := id.Public()
		pubs = append(pubs, pub)
	}
	// Registered 8 at a time: one by one took most of this test's time.
	var wg sync.WaitGroup
	errs := make(chan error, len(pubs))
	sem := make(chan struct{}, 8)
	for _, pub := range pubs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			_, err := admin.Register(ctx, pub, false)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := clientFromID(t, s, alice).CreateRoom(ctx, "big", "chat.big", members); err != nil {
		t.Fatal(err)
	}

	screen := func(args ...string) string {
		t.Helper()
		line := c.bin + " --server " + c.server + " --identity " + c.path("alice.id") + " " + strings.Join(args, " ")
		cmd := exec.Command("script", "-qec", line, "/dev/null")
		cmd.Env = append(os.Environ(), "NATS_URL=", "NATS_CONTEXT=", "MEMBERCTL_IDENTITY=", "XDG_CONFIG_HOME="+c.path("xdg"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("memberctl %v in a terminal: %v\n%s", args, err, out)
		}
		return string(out)
	}
	out := screen("room", "rekey", "big")
	for _, want := range []string{"sealing: 100/150", "sealing: 150/150", "epoch:       2", "members:     150"} {
		if !strings.Contains(out, want) {
			t.Errorf("rekey screen lacks %q:\n%q", want, out)
		}
	}
	out = screen("room", "members", "big", "--all")
	if !strings.Contains(out, "listing members: 150") || !strings.Contains(out, "m149") {
		t.Errorf("members screen:\n%q", out)
	}
	// Not a terminal: no progress text at all.
	if r := c.run("--identity", "alice.id", "room", "rekey", "big"); r.code != 0 || strings.Contains(r.stderr, "sealing") {
		t.Fatalf("rekey without a terminal: exit %d, stderr %q", r.code, r.stderr)
	}
}

func clientFromFile(t *testing.T, s *server.Server, path string) *client.Client {
	t.Helper()
	id, err := client.LoadIdentity(path)
	if err != nil {
		t.Fatal(err)
	}
	return clientFromID(t, s, id)
}

func clientFromID(t *testing.T, s *server.Server, id *client.Identity) *client.Client {
	t.Helper()
	return client.New(natstest.Connect(t, s), id)
}
