package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/internal/membertest"
)

// TestKeyFileRefusals: memberctl refuses each bad identity file of
// identity/testdata/identity_files.json with the identity package's own
// words (the client library's callers load through the same package), as
// a local error, before any connection.
func TestKeyFileRefusals(t *testing.T) {
	membertest.EachRefusedKeyFile(t, func(t *testing.T, path, want string) {
		_, loadErr := identity.Load(path)
		if loadErr == nil || loadErr.Error() != path+": "+want {
			t.Fatalf("identity.Load = %v, want %s: %s", loadErr, path, want)
		}
		var out, errb bytes.Buffer
		code := run(context.Background(), []string{"--identity", path, "--server", "nats://127.0.0.1:1", "whoami"}, &out, &errb)
		first, _, _ := strings.Cut(errb.String(), "\n")
		if line := "memberctl: load identity: " + loadErr.Error(); code != exitLocal || first != line {
			t.Fatalf("exit %d, stderr %q; want exit %d, %q", code, errb.String(), exitLocal, line)
		}
	})
}
