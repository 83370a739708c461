package e2e

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestCIRunsTheReadmeTestCommands: every `go test` command the README
// promises (the suite and the long tests) is one that CI runs, with only
// CI's own -count and -timeout added. The commands themselves are too long
// to run from a test of the suite they run.
func TestCIRunsTheReadmeTestCommands(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	ci, err := os.ReadFile("../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	ciOnly := regexp.MustCompile(` -count=1| -timeout \S+`)
	run := map[string]bool{}
	for _, line := range strings.Split(string(ci), "\n") {
		run[ciOnly.ReplaceAllString(strings.TrimSpace(line), "")] = true
	}
	var promised []string
	for _, line := range strings.Split(string(readme), "\n") {
		if cmd, ok := strings.CutPrefix(line, "    go test "); ok {
			promised = append(promised, "go test "+cmd)
		}
	}
	if len(promised) < 2 {
		t.Fatalf("README shows %d go test commands, want the suite and the long tests: %q", len(promised), promised)
	}
	for _, cmd := range promised {
		if !run[cmd] {
			t.Errorf(".ci/run does not run the README's %q", cmd)
		}
	}
}
