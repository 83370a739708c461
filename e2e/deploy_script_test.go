//go:build long

package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/unibus/membership/internal/natstest"
)

// deployScriptTimeout bounds the whole run of docs/deploy.md: building the
// four binaries on a cold cache, three nodes electing leaders, three
// replicas and the checks.
const deployScriptTimeout = 10 * time.Minute

// processLine is one line of the documented replica check: host, pid and
// the service key of one process.
var processLine = regexp.MustCompile(`^\S+ pid (\d+) service_key (N[A-Z2-7]{55})$`)

// TestDeployScript runs docs/deploy.md as an operator would: every command
// block of the page, in order, in one bash, from the repository root, with a
// fresh home directory — the page's one variable, MEMBERSHIP_HOME, lives
// under it. The script fails on the first failing command; afterwards the
// check's output must name three replica processes, all with one service
// key. The run gets its own network namespace when the machine allows one
// (unshare), so the page's fixed ports cannot collide with other tests.
func TestDeployScript(t *testing.T) {
	if _, err := exec.LookPath("jq"); err != nil {
		t.Fatalf("docs/deploy.md needs jq: %v", err)
	}
	blocks := shellBlocks(t, deployDoc)
	if len(blocks) < 6 {
		t.Fatalf("%s has %d command blocks; the deployment needs more", deployDoc, len(blocks))
	}
	script := "set -euo pipefail\n" + strings.Join(blocks, "\n")
	home := t.TempDir()
	cmd := deployShell(t, script)
	cmd.Dir = ".."
	cmd.Env = deployEnv(t, home)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := os.Create(filepath.Join(home, "script.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The nodes and replicas the page starts in the background stay in the
	// script's process group: end them all.
	t.Cleanup(func() { killGroup(t, cmd.Process.Pid) })
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(deployScriptTimeout):
		killGroup(t, cmd.Process.Pid)
		err = errors.New("timed out")
	}
	output, _ := os.ReadFile(out.Name())
	if err != nil {
		t.Fatalf("docs/deploy.md failed after %s: %v\n%s\nlogs:\n%s", time.Since(start).Round(time.Second), err, output, deployLogs(home))
	}
	t.Logf("docs/deploy.md ran in %s", time.Since(start).Round(time.Second))

	pids, keys := map[string]bool{}, map[string]bool{}
	for _, line := range strings.Split(string(output), "\n") {
		if m := processLine.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			pids[m[1]], keys[m[2]] = true, true
		}
	}
	if len(pids) != 3 || len(keys) != 1 {
		t.Fatalf("the check listed %d processes with %d service keys, want 3 with 1:\n%s", len(pids), len(keys), output)
	}
}

// deployShell is bash running script, in a network namespace of its own
// with only loopback when unshare can make one.
func deployShell(t *testing.T, script string) *exec.Cmd {
	t.Helper()
	if exec.Command("unshare", "-rn", "true").Run() == nil {
		return exec.Command("unshare", "-rn", "bash", "-c", "ip link set lo up && exec bash -c \"$0\"", script)
	}
	t.Log("no network namespace (unshare -rn failed): the page's ports 4222-4224 and 6222-6224 must be free")
	return exec.Command("bash", "-c", script)
}

// deployEnv is a fresh operator's environment: a new HOME (so no nats
// contexts, no identity), the Go caches of this machine, no network for
// module downloads.
func deployEnv(t *testing.T, home string) []string {
	t.Helper()
	env := []string{"HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, ".config"), "PATH=" + os.Getenv("PATH"), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOTOOLCHAIN=local"}
	for _, name := range []string{"GOCACHE", "GOMODCACHE", "GOROOT"} {
		v, err := exec.Command("go", "env", name).Output()
		if err != nil {
			t.Fatal(err)
		}
		env = append(env, name+"="+strings.TrimSpace(string(v)))
	}
	return env
}

// deployLogs is the tail of every log the page wrote.
func deployLogs(home string) string {
	logs, _ := filepath.Glob(filepath.Join(home, "membership", "log", "*.log"))
	var b strings.Builder
	for _, l := range logs {
		b.WriteString("== " + l + "\n" + tail(l) + "\n")
	}
	return b.String()
}

// killGroup ends the process group pgid and waits until it is gone.
func killGroup(t *testing.T, pgid int) {
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	ctx, cancel := context.WithTimeout(context.Background(), natstest.Within(3))
	defer cancel()
	for syscall.Kill(-pgid, 0) == nil {
		select {
		case <-ctx.Done():
			t.Errorf("process group %d still alive", pgid)
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}
