package e2e

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/unibus/membership/client"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/internal/natstest"
)

const membershipdPkg = "github.com/unibus/membership/cmd/membershipd"

var readyLine = regexp.MustCompile(`membershipd ready on ((?:nats|tls)://\S+)`)

// daemon is a running membershipd process.
type daemon struct {
	cmd    *exec.Cmd
	url    string
	stderr *strings.Builder
}

// startDaemon runs membershipd with args and waits for its ready line.
func startDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	cmd := exec.Command(natstest.Build(t, membershipdPkg), args...)
	cmd.Env = append(os.Environ(), "NATS_URL=", "NATS_CONTEXT=")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{cmd: cmd, stderr: &strings.Builder{}}
	cmd.Stderr = d.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := readyLine.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case d.url = <-found:
	case <-time.After(natstest.Within(3)):
		t.Fatalf("membershipd not ready; stderr:\n%s", d.stderr)
	}
	return d
}

// stop sends SIGTERM and requires a clean exit.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("membershipd exit: %v; stderr:\n%s", err, d.stderr)
		}
	case <-time.After(natstest.Within(2)):
		t.Fatal("membershipd did not stop on SIGTERM")
	}
	if !strings.Contains(d.stderr.String(), "draining") {
		t.Fatalf("no drain logged on SIGTERM; stderr:\n%s", d.stderr)
	}
}

func whoami(t *testing.T, url, identityFile string) string {
	t.Helper()
	id, err := identity.Load(identityFile)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), natstest.Patience)
	defer cancel()
	me, err := client.New(nc, id).Whoami(ctx)
	if err != nil {
		t.Fatalf("whoami: %v", err)
	}
	if !me.Admin {
		t.Fatalf("%s is not an admin", me.Endpoint)
	}
	return me.Endpoint
}

// TestMembershipdEmbedded starts the daemon with no NATS URL: it must run an
// embedded JetStream server, generate and register the first admin, keep
// state across a restart and drain on SIGTERM.
func TestMembershipdEmbedded(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	d := startDaemon(t, "--data-dir", data, "--listen", "127.0.0.1:-1")
	adminFile := filepath.Join(data, "admin.identity")
	fi, err := os.Stat(adminFile)
	if err != nil {
		t.Fatalf("admin identity not generated: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin identity mode %v, want 0600", fi.Mode().Perm())
	}
	if got := whoami(t, d.url, adminFile); got != "admin" {
		t.Fatalf("whoami = %s", got)
	}
	before, _ := os.ReadFile(adminFile)
	d.stop(t)

	d = startDaemon(t, "--data-dir", data, "--listen", "127.0.0.1:-1")
	after, _ := os.ReadFile(adminFile)
	if string(before) != string(after) {
		t.Fatal("restart replaced the admin identity file")
	}
	whoami(t, d.url, adminFile)
	d.stop(t)
}

// TestMembershipdJoin runs the daemon against an existing server and
// bootstraps an admin from an identity file generated beforehand.
func TestMembershipdJoin(t *testing.T) {
	s := natstest.Server(t)
	file := filepath.Join(t.TempDir(), "ops-admin.id")
	id, err := identity.New("ops-admin")
	if err != nil {
		t.Fatal(err)
	}
	if err := identity.Write(file, id); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "--server", s.ClientURL(), "--bootstrap-admin", file, "--service-key", writeServiceKey(t, t.TempDir()))
	if got := whoami(t, s.ClientURL(), file); got != "ops-admin" {
		t.Fatalf("whoami = %s", got)
	}
	// docs/operations.md: a replica's two connections, by name, the
	// caches' watches on the second.
	conns, err := s.Connz(&server.ConnzOptions{Subscriptions: true})
	if err != nil {
		t.Fatal(err)
	}
	subs := map[string]int{}
	for _, c := range conns.Conns {
		subs[c.Name] += int(c.NumSubs)
	}
	if subs["membershipd"] == 0 || subs["membershipd watches"] == 0 {
		t.Fatalf("subscriptions by connection name %v: want the daemon's \"membershipd\" and \"membershipd watches\"", subs)
	}
	d.stop(t)
}

// TestMembershipdFlags checks --help and -h (on stdout, exit 0, rendered
// without stray words), --version, a suggestion for a misspelt flag, and
// that bad settings fail clearly before anything starts.
func TestMembershipdFlags(t *testing.T) {
	bin := natstest.Build(t, membershipdPkg)
	for _, flag := range []string{"--help", "-h"} {
		cmd := exec.Command(bin, flag)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil || stderr.Len() > 0 {
			t.Fatalf("%s: %v, stderr %q", flag, err, stderr.String())
		}
		for _, want := range []string{"--server", "NATS_URL", "--connect-wait", "--inbox-prefix", "--data-dir", "--auth", "SIGTERM", "--workers=4", "'nats micro ls' lists each"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("%s lacks %q", flag, want)
			}
		}
		// Go's flag package took back-quoted words for the value's name.
		if strings.Contains(string(out), "-workers nats micro ls") || strayFlagWord.MatchString(string(out)) {
			t.Errorf("%s renders a back-quoted word as a value name:\n%s", flag, out)
		}
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil || !strings.HasPrefix(string(out), "membershipd ") {
		t.Fatalf("--version: %v: %q", err, out)
	}
	out, err = exec.Command(bin, "--wrokers", "3").CombinedOutput()
	if err == nil || !strings.Contains(string(out), `did you mean "--workers"`) {
		t.Fatalf("a misspelt flag gets no suggestion: %v\n%s", err, out)
	}
	// Completion as the nats CLI offers it, and fish's.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--completion-script-bash"}, "_membershipd_bash_autocomplete"},
		{[]string{"--completion-script-zsh"}, "#compdef membershipd"},
		{[]string{"--completion-script-fish"}, "complete -c membershipd -l workers -r -F"},
		{[]string{"--completion-bash", "--s"}, "--service-key"}, // what the bash script asks
	} {
		if out, err := exec.Command(bin, tc.args...).Output(); err != nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("%v: %v; want %q in\n%s", tc.args, err, tc.want, out)
		}
	}
	// --nats-url, the old name of --server, still sets it.
	out, err = exec.Command(bin, "--nats-url", "nats://127.0.0.1:1", "--service-key", "k.nk", "--print-config").Output()
	if err != nil || !strings.Contains(string(out), `"server": "nats://127.0.0.1:1"`) {
		t.Fatalf("--nats-url: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--auth", "maybe"}, "auth mode"},
		{[]string{"--replicas", "2"}, "--replicas"},
		{[]string{"--sync", "sometimes"}, "--sync"},
		{[]string{"--skew", "10ms"}, "skew"},
		{[]string{"--prefix", "a.*"}, "prefix"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, err := exec.Command(bin, tc.args...).CombinedOutput()
			if err == nil {
				t.Fatalf("accepted %v", tc.args)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("error for %v does not mention %q:\n%s", tc.args, tc.want, out)
			}
		})
	}
}
