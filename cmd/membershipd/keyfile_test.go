package main

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/internal/membertest"
)

// TestBootstrapAdminKeyFile: --bootstrap-admin refuses each bad identity
// file of identity/testdata/identity_files.json exactly as identity.Load
// (and so memberctl and the client's callers) does, before touching the
// store.
func TestBootstrapAdminKeyFile(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	membertest.EachRefusedKeyFile(t, func(t *testing.T, path, want string) {
		_, loadErr := identity.Load(path)
		err := bootstrapAdmin(context.Background(), nil, &Config{BootstrapAdmin: path, AdminEndpoint: "admin"}, log)
		if loadErr == nil || err == nil || err.Error() != loadErr.Error() || err.Error() != path+": "+want {
			t.Fatalf("bootstrapAdmin = %v, identity.Load = %v, want %s: %s", err, loadErr, path, want)
		}
	})
}
