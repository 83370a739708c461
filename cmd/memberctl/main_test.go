package main

import (
	"bytes"
	"context"
	"slices"
	"testing"

	"github.com/unibus/membership/internal/cli"
)

// TestParseArgs checks that fisk finds flags anywhere among the arguments,
// that "--" ends them and that argument counts are enforced as usage errors.
func TestParseArgs(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		pos     []string
		subject string
		json    bool
		usage   bool
	}{
		{"flags after", []string{"ops", "--subject", "chat.ops", "--json"}, []string{"ops"}, "chat.ops", true, false},
		{"flags before", []string{"--subject=chat.ops", "ops"}, []string{"ops"}, "chat.ops", false, false},
		{"double dash", []string{"--subject", "s", "--", "--json"}, []string{"--json"}, "s", false, false},
		{"too many", []string{"a", "b"}, nil, "", false, true},
		{"missing", []string{"--subject", "s"}, nil, "", false, true},
		{"unknown flag", []string{"ops", "--nope"}, nil, "", false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := &app{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, bindings: map[string]*binding{}}
			name, _, _, err := cli.Parse(a.build(context.Background()), append([]string{"room", "create"}, tc.args...))
			if tc.usage {
				if err == nil {
					t.Fatalf("parsed %v", tc.args)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			fs := newFlagSet(name)
			subject := fs.String("subject", "", "")
			pos, err := a.parseArgs(fs, lookup(name), nil, 1, 1)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(pos, tc.pos) || *subject != tc.subject || a.g.json != tc.json {
				t.Fatalf("pos %q subject %q json %v", pos, *subject, a.g.json)
			}
		})
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// TestRunUsage checks exit codes of command lines that fail before any
// connection is made.
func TestRunUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
	}{
		{"no command", nil, exitUsage},
		{"unknown", []string{"nope"}, exitUsage},
		{"group without sub", []string{"identity"}, exitUsage},
		{"help", []string{"help"}, exitOK},
		{"help command", []string{"help", "room", "key"}, exitOK},
		{"help unknown", []string{"help", "nope"}, exitUsage},
		{"command -h", []string{"room", "key", "-h"}, exitOK},
		{"bad limit", []string{"--identity", "x.id", "identity", "list", "--limit", "-1"}, exitUsage},
		{"bad epoch", []string{"--identity", "x.id", "room", "key", "ops", "--epoch", "0"}, exitUsage},
		{"all with after", []string{"--identity", "x.id", "room", "members", "ops", "--all", "--after", "a"}, exitUsage},
		{"missing identity file", []string{"--identity", "/nonexistent/x.id", "whoami"}, exitLocal},
		{"bad endpoint", []string{"keygen", "--endpoint", "a.b"}, exitUsage},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(envIdentity, "")
			var out, errOut bytes.Buffer
			if got := run(context.Background(), tc.args, &out, &errOut); got != tc.code {
				t.Fatalf("exit %d, want %d\nstderr: %s", got, tc.code, errOut.String())
			}
		})
	}
}
