package natstest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// NatsCLIPkg is the natscli main package, declared as a go tool in go.mod.
const NatsCLIPkg = "github.com/nats-io/natscli/nats"

// NatsCLI returns the path of the executable that `go tool nats` runs. The
// go command builds it once and keeps it in its build cache, so test
// binaries and later runs share it instead of linking the CLI again (that
// link took 45 s of the suite on a loaded machine).
func NatsCLI(t testing.TB) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	const key = "go tool nats"
	if p, ok := builtPaths[key]; ok {
		return p
	}
	out, err := exec.Command("go", "tool", "-n", "nats").Output()
	if err != nil {
		t.Fatalf("go tool -n nats: %v", err)
	}
	p := strings.TrimSpace(string(out))
	builtPaths[key] = p
	return p
}

// RunNats runs the nats CLI against s with args and stdin (nil: none),
// isolated from the user's contexts, and returns its stdout and stderr.
func RunNats(t testing.TB, s *server.Server, stdin []byte, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	home := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), Within(3))
	defer cancel()
	cmd := exec.CommandContext(ctx, NatsCLI(t), append([]string{"--server", s.ClientURL(), "--timeout", "2s"}, args...)...)
	cmd.Env = append(os.Environ(), "NATS_URL=", "NATS_CONTEXT=", "HOME="+home, "XDG_CONFIG_HOME="+home, "NO_COLOR=1")
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}
