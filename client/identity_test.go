package client_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/client"
)

func TestNewIdentity(t *testing.T) {
	id, err := client.NewIdentity("alice")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := id.Public()
	if err != nil {
		t.Fatal(err)
	}
	if pub.Endpoint != "alice" || !nkeys.IsValidPublicUserKey(pub.SignKey) || !nkeys.IsValidPublicCurveKey(pub.XKey) {
		t.Fatalf("Public = %+v", pub)
	}
	for _, bad := range []string{"", "a.b", strings.Repeat("x", 65)} {
		if _, err := client.NewIdentity(bad); !errors.Is(err, api.ErrInvalid) {
			t.Errorf("NewIdentity(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestIdentityFile(t *testing.T) {
	id, err := client.NewIdentity("alice")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := id.Public()
	path := filepath.Join(t.TempDir(), "alice.id")
	if err := client.WriteIdentity(path, id); err != nil {
		t.Fatalf("WriteIdentity: %v", err)
	}

	t.Run("mode 0600", func(t *testing.T) {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if m := fi.Mode().Perm(); m != 0o600 {
			t.Fatalf("mode = %o, want 600", m)
		}
	})

	t.Run("round trip", func(t *testing.T) {
		got, err := client.LoadIdentity(path)
		if err != nil {
			t.Fatalf("LoadIdentity: %v", err)
		}
		pub, err := got.Public()
		if err != nil {
			t.Fatal(err)
		}
		if pub != want {
			t.Fatalf("loaded %+v, wrote %+v", pub, want)
		}
		// The loaded keys sign and open like the originals.
		msg := []byte("hello")
		sig, err := got.Sign.Sign(msg)
		if err != nil {
			t.Fatal(err)
		}
		if err := id.Sign.Verify(msg, sig); err != nil {
			t.Fatalf("signature of loaded key does not verify: %v", err)
		}
		sealed, err := id.XKey.Seal(msg, want.XKey)
		if err != nil {
			t.Fatal(err)
		}
		if open, err := got.XKey.Open(sealed, want.XKey); err != nil || string(open) != "hello" {
			t.Fatalf("Open with loaded xkey = %q, %v", open, err)
		}
	})

	t.Run("refuses overwrite", func(t *testing.T) {
		other, _ := client.NewIdentity("bob")
		if err := client.WriteIdentity(path, other); !errors.Is(err, os.ErrExist) {
			t.Fatalf("WriteIdentity over an existing file = %v, want os.ErrExist", err)
		}
		got, err := client.LoadIdentity(path)
		if err != nil {
			t.Fatal(err)
		}
		if got.Endpoint != "alice" {
			t.Fatalf("file now holds %s", got.Endpoint)
		}
	})

	for _, mode := range []os.FileMode{0o640, 0o604, 0o644, 0o660, 0o666, 0o700 | 0o007} {
		t.Run("refuses mode "+mode.String(), func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "id")
			if err := client.WriteIdentity(p, id); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, mode); err != nil {
				t.Fatal(err)
			}
			if _, err := client.LoadIdentity(p); !errors.Is(err, client.ErrKeyFileMode) {
				t.Fatalf("LoadIdentity(mode %o) = %v, want ErrKeyFileMode", mode, err)
			}
		})
	}

	t.Run("accepts 0400", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "id")
		if err := client.WriteIdentity(p, id); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o400); err != nil {
			t.Fatal(err)
		}
		if _, err := client.LoadIdentity(p); err != nil {
			t.Fatalf("LoadIdentity(0400) = %v", err)
		}
	})

	t.Run("missing file", func(t *testing.T) {
		if _, err := client.LoadIdentity(filepath.Join(t.TempDir(), "none")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("LoadIdentity(missing) = %v, want os.ErrNotExist", err)
		}
	})
}

func TestParseIdentity(t *testing.T) {
	seed := func(create func() (nkeys.KeyPair, error)) string {
		kp, err := create()
		if err != nil {
			t.Fatal(err)
		}
		s, err := kp.Seed()
		if err != nil {
			t.Fatal(err)
		}
		return string(s)
	}
	user, curve, account := seed(nkeys.CreateUser), seed(nkeys.CreateCurveKeys), seed(nkeys.CreateAccount)
	file := func(endpoint, sign, x string) string {
		var b strings.Builder
		b.WriteString(client.IdentityHeader + "\n")
		if endpoint != "" {
			b.WriteString("endpoint: " + endpoint + "\n")
		}
		b.WriteString("signing-seed: " + sign + "\nxkey-seed: " + x + "\n")
		return b.String()
	}

	tests := []struct {
		name string
		data string
		ok   bool
	}{
		{"ok", file("alice", user, curve), true},
		{"ok with blank lines and comments", "\n# c\n" + file("alice", user, curve) + "\n# end\n", true},
		{"curve seed as signing seed", file("alice", curve, curve), false},
		{"account seed as signing seed", file("alice", account, curve), false},
		{"user seed as xkey seed", file("alice", user, user), false},
		{"missing endpoint", file("", user, curve), false},
		{"bad endpoint", file("a.b", user, curve), false},
		{"missing signing seed", "endpoint: alice\nxkey-seed: " + curve + "\n", false},
		{"missing xkey seed", "endpoint: alice\nsigning-seed: " + user + "\n", false},
		{"public key as seed", file("alice", "UAAAA", curve), false},
		{"garbage", "this is not an identity file", false},
		{"binary garbage", "\x00\xff\xfe", false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := client.ParseIdentity([]byte(tt.data))
			if tt.ok {
				if err != nil {
					t.Fatalf("ParseIdentity: %v", err)
				}
				if id.Endpoint != "alice" {
					t.Fatalf("endpoint = %q", id.Endpoint)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseIdentity accepted %q", tt.data)
			}
		})
	}
}
