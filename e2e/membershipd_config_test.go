package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/unibus/membership/internal/natstest"
)

// TestMembershipdConfigFile checks the precedence flags > environment >
// config file > defaults through --print-config, and that secrets in URLs
// are masked and unknown settings refused.
func TestMembershipdConfigFile(t *testing.T) {
	bin := natstest.Build(t, membershipdPkg)
	file := filepath.Join(t.TempDir(), "membershipd.json")
	cfg := `{"skew": "45s", "log-format": "json", "log-level": "warn", "queue": "from-file",
		"server": "nats://svc:s3cret@127.0.0.1:4222", "service-key": "/etc/membership/service-signing.nk"}`
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", file, "--log-level", "debug", "--print-config")
	cmd.Env = append(os.Environ(), "MEMBERSHIPD_SKEW=40s", "MEMBERSHIPD_QUEUE=from-env", "NATS_URL=")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("--print-config: %v", err)
	}
	if strings.Contains(string(out), "s3cret") {
		t.Fatalf("--print-config shows a password:\n%s", out)
	}
	var got map[string]string
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("--print-config is not JSON: %v\n%s", err, out)
	}
	for key, want := range map[string]string{
		"log-level":  "debug",                           // flag over file
		"skew":       "40s",                             // env over file
		"log-format": "json",                            // file over default
		"server":     "nats://svc:xxxxx@127.0.0.1:4222", // file (empty NATS_URL is unset), masked
		"replicas":   "1",                               // default
	} {
		if got[key] != want {
			t.Errorf("%s = %q, want %q", key, got[key], want)
		}
	}
	if got["queue"] != "from-env" {
		t.Errorf("queue = %q: the environment must win over the file", got["queue"])
	}

	bad := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(bad, []byte(`{"replicas": 3, "bogus": 1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(bin, "--config", bad, "--print-config").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "bogus") {
		t.Fatalf("unknown setting accepted or not named: %v\n%s", err, out)
	}
}
