package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/internal/natstest"
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
// bash and completes a command, a subcommand and a command's own flag
// (bash asks memberctl, as fisk's scripts do); the zsh script is fisk's,
// and the fish script lists every command's flags.
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
		{[]string{"ro"}, "room"},
		{[]string{"room", "rek"}, "rekey"},
		{[]string{"--identity", "a.id", "identity", "dis"}, "disable"},
		{[]string{"room", "create", "--subj"}, "--subject"},
		{[]string{"room", "remove", "--no-r"}, "--no-rekey"},
	} {
		words := append([]string{c.bin}, tc.words...)
		probe := "source " + script + "; COMP_WORDS=(" + strings.Join(words, " ") + "); COMP_CWORD=" +
			strconv.Itoa(len(words)-1) + "; _memberctl_bash_autocomplete; echo \"${COMPREPLY[*]}\""
		out, err := exec.Command("bash", "-c", probe).CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		if strings.TrimSpace(string(out)) != tc.want {
			t.Errorf("completing %v = %q, want %q", tc.words, strings.TrimSpace(string(out)), tc.want)
		}
	}
	// The bash line of docs/operations.md, as written, with memberctl on PATH.
	doc, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for _, l := range strings.Split(string(doc), "\n") {
		if l = strings.TrimSpace(l); strings.HasSuffix(l, "# bash") {
			line = strings.TrimSpace(strings.TrimSuffix(l, "# bash"))
		}
	}
	if line == "" {
		t.Fatal("docs/operations.md has no bash completion line")
	}
	sh := exec.Command("bash", "-c", line+" && complete -p memberctl && _memberctl_bash_autocomplete")
	sh.Env = append(os.Environ(), "PATH="+filepath.Dir(c.bin)+":"+os.Getenv("PATH"))
	if out, err := sh.CombinedOutput(); err != nil || !strings.Contains(string(out), "_memberctl_bash_autocomplete") {
		t.Fatalf("%s: %v\n%s", line, err, out)
	}
	if r := c.run("completion", "tcsh"); r.code != exitUsage {
		t.Fatalf("completion tcsh: exit %d, want %d", r.code, exitUsage)
	}
	if r := c.run("completion", "zsh"); r.code != 0 || !strings.Contains(r.stdout, "#compdef memberctl") {
		t.Fatalf("completion zsh: exit %d\n%s", r.code, r.stdout)
	}
	// What the zsh script asks for: a command's own flags.
	if r := c.run("--completion-zsh-menu", "room", "key", "--"); r.code != 0 || !strings.Contains(r.stdout, "F\tepoch\t") {
		t.Fatalf("zsh menu data for room key: exit %d\n%s", r.code, r.stdout)
	}
	r = c.run("completion", "fish")
	for _, want := range []string{
		"-n '__fish_seen_subcommand_from create' -l subject -r -F",
		"-n '__fish_seen_subcommand_from members' -l all -d",
		"-n '__fish_seen_subcommand_from room; and not __fish_seen_subcommand_from create get members key add remove rekey leave delete mine",
		"-l identity -r -F",
	} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("completion fish (exit %d) lacks %q", r.code, want)
		}
	}
	if t.Failed() {
		t.Logf("fish script:\n%s", r.stdout)
	}
}

// strayFlagWord finds a flag line of help whose name is followed by a
// single space and a word: help text taken for the value's name, as Go's
// flag package did with back-quoted words ("-workers nats micro ls").
var strayFlagWord = regexp.MustCompile(`(?m)^\s+(-\w, )?--?[a-z][a-z-]*(=\S+)? [a-z]\S*`)

// TestMemberctlHelp checks -h and --help at every level (the program, a
// group, a command): exit 0, help on stdout, nothing on stderr; a
// suggestion for a misspelt command or flag; --version.
func TestMemberctlHelp(t *testing.T) {
	c, _ := newCtl(t)
	for _, level := range [][]string{nil, {"room"}, {"identity"}, {"room", "create"}, {"identity", "list"}, {"audit"}, {"completion"}} {
		for _, flag := range []string{"-h", "--help"} {
			args := append(append([]string{}, level...), flag)
			r := c.run(args...)
			if r.code != 0 || r.stderr != "" || !strings.Contains(r.stdout, "usage: memberctl") {
				t.Errorf("%v: exit %d, stderr %q, stdout:\n%s", args, r.code, r.stderr, r.stdout)
			}
			if m := strayFlagWord.FindString(r.stdout); m != "" {
				t.Errorf("%v renders a word beside a flag's name: %q", args, m)
			}
			if len(level) == 2 && !strings.Contains(r.stdout, "usage: memberctl "+strings.Join(level, " ")) {
				t.Errorf("%v does not show the command's usage:\n%s", args, r.stdout)
			}
		}
	}
	if r := c.run("help", "room", "create"); r.code != 0 || !strings.Contains(r.stdout, "--subject") {
		t.Errorf("help room create: exit %d\n%s", r.code, r.stdout)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"romo"}, `did you mean "room"`},
		{[]string{"room", "ceate"}, `did you mean "create"`},
		{[]string{"room", "create", "ops", "--subjet", "s"}, `did you mean "--subject"`},
		{[]string{"--identiy", "a.id", "whoami"}, `did you mean "--identity"`},
	} {
		if r := c.run(tc.args...); r.code != exitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q, want %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
	if r := c.run("--version"); r.code != 0 || !strings.HasPrefix(r.stdout, "memberctl ") {
		t.Errorf("--version: exit %d: %q", r.code, r.stdout)
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
	ctx := natstest.Ctx(t, 6)
	admin := clientFromFile(t, s, c.path("admin.id"))
	alice, err := identity.New("alice")
	if err != nil {
		t.Fatal(err)
	}
	if err := identity.Write(c.path("alice.id"), alice); err != nil {
		t.Fatal(err)
	}
	members := []string{}
	pubs := []api.PublicKeys{}
	for i := range 150 {
		id, _ := identity.New(fmt.Sprintf("m%03d", i))
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
	id, err := identity.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return clientFromID(t, s, id)
}

func clientFromID(t *testing.T, s *server.Server, id *identity.Identity) *client.Client {
	t.Helper()
	return client.New(natstest.Connect(t, s), id)
}
