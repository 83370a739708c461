package e2e

import (
	"bufio"
	"os"
	"strings"
	"testing"
)

// deployDoc is the page whose command blocks TestDeployScript runs
// (TestBackupRestore runs its backup and restore blocks).
const deployDoc = "../docs/deploy.md"

// shellBlocks returns the ```sh blocks of a Markdown file, in order.
func shellBlocks(t *testing.T, path string) []string {
	t.Helper()
	return fencedBlocks(t, path, "sh")
}

// fencedBlocks returns the ```lang blocks of a Markdown file, in order.
func fencedBlocks(t *testing.T, path, lang string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	var cur *strings.Builder
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case cur == nil && strings.TrimSpace(line) == "```"+lang:
			cur = &strings.Builder{}
		case cur != nil && strings.TrimSpace(line) == "```":
			blocks = append(blocks, cur.String())
			cur = nil
		case cur != nil:
			cur.WriteString(line + "\n")
		}
	}
	if cur != nil {
		t.Fatalf("%s: unterminated code block", path)
	}
	return blocks
}

// shellBlock is the one ```sh block of the Markdown file at path that
// contains marker.
func shellBlock(t *testing.T, path, marker string) string {
	t.Helper()
	return fencedBlock(t, path, "sh", marker)
}

// fencedBlock is the one ```lang block of the Markdown file at path that
// contains marker.
func fencedBlock(t *testing.T, path, lang, marker string) string {
	t.Helper()
	var found []string
	for _, b := range fencedBlocks(t, path, lang) {
		if strings.Contains(b, marker) {
			found = append(found, b)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s: %d command blocks contain %q, want 1", path, len(found), marker)
	}
	return found[0]
}
