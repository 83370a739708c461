package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/internal/natstest"
)

// runDaemonToExit runs membershipd with args until it exits (or limit
// passes) and returns its combined output, how long it ran, and its error.
func runDaemonToExit(t *testing.T, limit time.Duration, args ...string) (string, time.Duration, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, natstest.Build(t, membershipdPkg), args...)
	cmd.Env = append(os.Environ(), "NATS_URL=", "NATS_CONTEXT=")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("membershipd %v still running after %s:\n%s", args, limit, out)
	}
	return string(out), time.Since(start), err
}

// seedFileKey is the key pair of a seed file.
func seedFileKey(t *testing.T, seedFile string) nkeys.KeyPair {
	t.Helper()
	seed, err := os.ReadFile(seedFile)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// publicKey is the public key of a seed file.
func publicKey(t *testing.T, seedFile string) string {
	t.Helper()
	pub, _ := seedFileKey(t, seedFile).PublicKey()
	return pub
}

// TestMembershipdServiceKeyRequired: outside the lone embedded server a
// replica without --service-key would sign with a throwaway key; it must
// refuse to start instead.
func TestMembershipdServiceKeyRequired(t *testing.T) {
	for name, args := range map[string][]string{
		"joining":      {"--server", "nats://127.0.0.1:1"},
		"cluster node": {"--server-name", "n1", "--cluster-listen", "127.0.0.1:-1", "--routes", "nats://127.0.0.1:1", "--data-dir", t.TempDir()},
	} {
		t.Run(name, func(t *testing.T) {
			out, _, err := runDaemonToExit(t, 30*time.Second, args...)
			if err == nil || !strings.Contains(out, "--service-key is required") {
				t.Fatalf("started without --service-key (%v):\n%s", err, out)
			}
		})
	}
}

// TestMembershipdServiceKeyDisagreement: a replica whose service key differs
// from the one the running replicas publish refuses to serve, and names
// both keys.
func TestMembershipdServiceKeyDisagreement(t *testing.T) {
	s := natstest.Server(t)
	dir := t.TempDir()
	first := writeServiceKey(t, dir)
	d := startDaemon(t, "--server", s.ClientURL(), "--service-key", first, "--bootstrap-admin", filepath.Join(dir, "admin.id"))
	otherDir := t.TempDir()
	other := writeServiceKey(t, otherDir)
	out, _, err := runDaemonToExit(t, time.Minute, "--server", s.ClientURL(), "--service-key", other)
	if err == nil {
		t.Fatalf("a replica with another service key started:\n%s", out)
	}
	for _, want := range []string{publicKey(t, first), publicKey(t, other), "give every replica the same key file"} {
		if !strings.Contains(out, want) {
			t.Errorf("refusal does not name %q:\n%s", want, out)
		}
	}
	// The same key joins.
	again := startDaemon(t, "--server", s.ClientURL(), "--service-key", first)
	again.stop(t)
	d.stop(t)
}

// TestMembershipdDataDirLock: a second membershipd on a data directory in
// use exits at once, naming the holder, before opening anything.
func TestMembershipdDataDirLock(t *testing.T) {
	data := t.TempDir()
	d := startDaemon(t, "--data-dir", data, "--listen", "127.0.0.1:-1")
	out, took, err := runDaemonToExit(t, 30*time.Second, "--data-dir", data, "--listen", "127.0.0.1:-1")
	want := fmt.Sprintf("in use by membershipd pid %d", d.cmd.Process.Pid)
	if err == nil || !strings.Contains(out, want) || took > 2*time.Second {
		t.Fatalf("second daemon on %s: %v after %s, want a refusal naming the holder (%q) within 2s:\n%s", data, err, took, want, out)
	}
	if strings.Contains(out, "nats-server") || strings.Contains(out, "recover") {
		t.Fatalf("the second daemon opened the store before refusing:\n%s", out)
	}
	d.stop(t)
}

// TestMembershipdBusyPort: a listen address in use fails within 2 s with a
// message that says so.
func TestMembershipdBusyPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	out, took, err := runDaemonToExit(t, 30*time.Second, "--data-dir", t.TempDir(), "--listen", l.Addr().String())
	if err == nil || !strings.Contains(out, "--listen "+l.Addr().String()+": cannot listen") || took > 2*time.Second {
		t.Fatalf("busy --listen: %v after %s, want a clear failure within 2s:\n%s", err, took, out)
	}
}

// TestMembershipdWaitsForNATS: started before any NATS server listens, the
// daemon logs that it retries and becomes ready once a server is up.
func TestMembershipdWaitsForNATS(t *testing.T) {
	port := freePort(t)
	dir := t.TempDir()
	cmd := exec.Command(natstest.Build(t, membershipdPkg), "--server", fmt.Sprintf("nats://127.0.0.1:%d", port),
		"--service-key", writeServiceKey(t, dir), "--bootstrap-admin", filepath.Join(dir, "admin.id"))
	cmd.Env = append(os.Environ(), "NATS_URL=", "NATS_CONTEXT=")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := make(chan string, 64)
	var log strings.Builder
	var mu sync.Mutex
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			mu.Lock()
			log.WriteString(sc.Text() + "\n")
			mu.Unlock()
			lines <- sc.Text()
		}
		close(lines)
	}()
	waitLine := func(what string, match func(string) bool) {
		t.Helper()
		timeout := time.After(time.Minute)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					mu.Lock()
					defer mu.Unlock()
					t.Fatalf("membershipd exited before %s:\n%s", what, log.String())
				}
				if match(l) {
					return
				}
			case <-timeout:
				t.Fatalf("no %s", what)
			}
		}
	}
	waitLine("retry log line", func(l string) bool {
		return strings.Contains(l, "not ready, retrying") && strings.Contains(l, `step="connect to NATS"`)
	})
	natstest.ServerWith(t, &server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: t.TempDir()})
	waitLine("ready line", func(l string) bool { return strings.Contains(l, "membershipd ready") })
}

// TestVersionFlags: both binaries print their build's version with
// --version and exit 0, whatever else the command line holds.
func TestVersionFlags(t *testing.T) {
	for _, tc := range []struct {
		pkg  string
		args []string
	}{
		{membershipdPkg, []string{"--version", "--server", "nats://127.0.0.1:1"}},
		{memberctlPkg, []string{"--version"}},
	} {
		name := filepath.Base(tc.pkg)
		out, err := exec.Command(natstest.Build(t, tc.pkg), tc.args...).Output()
		if err != nil || !strings.HasPrefix(string(out), name+" ") {
			t.Errorf("%s %v: %v, output %q", name, tc.args, err, out)
		}
	}
}
