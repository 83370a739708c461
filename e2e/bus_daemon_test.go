package e2e

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/unibus/membership/callout"
	"github.com/unibus/membership/internal/natstest"
)

// memberctlAt runs memberctl against url with args.
func memberctlAt(t *testing.T, url string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(natstest.Build(t, memberctlPkg), append([]string{"--server", url}, args...)...)
	cmd.Env = append(cmd.Environ(), "NATS_URL=", "NATS_CONTEXT=", "NATS_CREDS=", "NATS_NKEY=", "HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestBusEmbeddedEnforce: membershipd --bus enforce on its embedded server
// admits memberctl --bus (the identity's key) and refuses a connection
// without credentials.
func TestBusEmbeddedEnforce(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	d := startDaemon(t, "--data-dir", data, "--listen", "127.0.0.1:-1", "--bus", "enforce")
	admin := filepath.Join(data, "admin.identity")
	out, err := memberctlAt(t, d.url, "--identity", admin, "--bus", "whoami")
	if err != nil || !strings.Contains(out, "admin") {
		t.Fatalf("memberctl --bus whoami: %v\n%s", err, out)
	}
	if out, err := memberctlAt(t, d.url, "--identity", admin, "whoami"); err == nil {
		t.Fatalf("memberctl without --bus was admitted:\n%s", out)
	}
	if _, err := nats.Connect(d.url); err == nil {
		t.Fatal("a connection without credentials was admitted")
	}
	d.stop(t)
}

// TestBusEmbeddedObserve: in observe mode a connection enforce would refuse
// is admitted, logged, and counted in `nats micro stats`.
func TestBusEmbeddedObserve(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	d := startDaemon(t, "--data-dir", data, "--listen", "127.0.0.1:-1", "--bus", "observe")
	nc, err := nats.Connect(d.url) // no credentials: enforce would refuse it
	if err != nil {
		t.Fatalf("observe refused a connection: %v", err)
	}
	defer nc.Close()
	cmd := exec.Command(natstest.NatsCLI(t), "--server", d.url, "micro", "stats", callout.ServiceName, "--json")
	cmd.Env = append(cmd.Environ(), "NATS_URL=", "NATS_CONTEXT=", "HOME="+t.TempDir())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nats micro stats: %v\n%s", err, out)
	}
	var stats []struct {
		Endpoints []struct {
			Data callout.Counts `json:"data"`
		} `json:"endpoints"`
	}
	if err := json.Unmarshal(out, &stats); err != nil || len(stats) != 1 || len(stats[0].Endpoints) != 1 {
		t.Fatalf("nats micro stats: %v\n%s", err, out)
	}
	// This test's connection and the CLI's own.
	if n := stats[0].Endpoints[0].Data; n.WouldDenyConnect < 2 || n.Refused != 0 {
		t.Fatalf("stats %+v: want at least 2 would-be refusals and no refusal", n)
	}
	d.stop(t)
	if !strings.Contains(d.stderr.String(), "bus observe: connection enforce would refuse") {
		t.Fatalf("no observe log line; stderr:\n%s", d.stderr)
	}
}
