package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nkeys"
)

func TestServiceKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "data", serviceKeyFile)

	kp, err := loadServiceKey(path, true)
	if err != nil {
		t.Fatalf("generate: %v", err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("generated key file mode %04o, want 0600", info.Mode().Perm())
	}
	pub, _ := kp.PublicKey()
	if !nkeys.IsValidPublicServerKey(pub) {
		t.Fatalf("generated key %s is not a server key", pub)
	}
	again, err := loadServiceKey(path, true)
	if err != nil {
		t.Fatal(err)
	}
	if p2, _ := again.PublicKey(); p2 != pub {
		t.Fatal("a second start generated another key instead of loading the file")
	}

	t.Run("group or world readable refused", func(t *testing.T) {
		for _, mode := range []os.FileMode{0o640, 0o604, 0o644} {
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
			if _, err := loadServiceKey(path, false); err == nil {
				t.Fatalf("key file with mode %04o accepted", mode)
			}
		}
		if err := os.Chmod(path, 0o600); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("missing file without generation", func(t *testing.T) {
		if _, err := loadServiceKey(filepath.Join(dir, "absent.nk"), false); err == nil {
			t.Fatal("a missing key file was accepted")
		}
	})
	t.Run("user seed refused", func(t *testing.T) {
		u, _ := nkeys.CreateUser()
		seed, _ := u.Seed()
		p := filepath.Join(dir, "user.nk")
		if err := os.WriteFile(p, seed, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := loadServiceKey(p, false); err == nil {
			t.Fatal("a user seed was accepted as service key")
		}
	})
	t.Run("garbage refused", func(t *testing.T) {
		p := filepath.Join(dir, "junk.nk")
		if err := os.WriteFile(p, []byte("not a seed"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := loadServiceKey(p, false); err == nil {
			t.Fatal("garbage accepted")
		}
	})
}
