package identity_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/identity"
)

func TestNew(t *testing.T) {
	id, err := identity.New("alice")
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
		if _, err := identity.New(bad); !errors.Is(err, api.ErrInvalid) {
			t.Errorf("New(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestFile(t *testing.T) {
	id, err := identity.New("alice")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := id.Public()
	path := filepath.Join(t.TempDir(), "alice.id")
	if err := identity.Write(path, id); err != nil {
		t.Fatalf("Write: %v", err)
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
		got, err := identity.Load(path)
		if err != nil {
			t.Fatalf("Load: %v", err)
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
		other, _ := identity.New("bob")
		if err := identity.Write(path, other); !errors.Is(err, os.ErrExist) {
			t.Fatalf("Write over an existing file = %v, want os.ErrExist", err)
		}
		got, err := identity.Load(path)
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
			if err := identity.Write(p, id); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, mode); err != nil {
				t.Fatal(err)
			}
			if _, err := identity.Load(p); !errors.Is(err, identity.ErrKeyFileMode) {
				t.Fatalf("Load(mode %o) = %v, want ErrKeyFileMode", mode, err)
			}
		})
	}

	t.Run("accepts 0400", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "id")
		if err := identity.Write(p, id); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o400); err != nil {
			t.Fatal(err)
		}
		if _, err := identity.Load(p); err != nil {
			t.Fatalf("Load(0400) = %v", err)
		}
	})

	t.Run("missing file", func(t *testing.T) {
		if _, err := identity.Load(filepath.Join(t.TempDir(), "none")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("Load(missing) = %v, want os.ErrNotExist", err)
		}
	})
}

func TestParse(t *testing.T) {
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
		b.WriteString(identity.Header + "\n")
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
			id, err := identity.Parse([]byte(tt.data))
			if tt.ok {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if id.Endpoint != "alice" {
					t.Fatalf("endpoint = %q", id.Endpoint)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse accepted %q", tt.data)
			}
		})
	}
}

// TestParseVectors: identity/testdata/identity_files.json, the files that
// memberctl and membershipd are checked against too, parse to exactly the
// outcome each vector gives. A key file is written by a program, so a field
// the format does not define or one given twice is refused, and the error
// names it (docs/protocol.md §3).
func TestParseVectors(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "identity_files.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Vectors []struct{ Name, File, Error string }
	}
	if err := json.Unmarshal(data, &doc); err != nil || len(doc.Vectors) == 0 {
		t.Fatalf("vectors: %v", err)
	}
	for _, v := range doc.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			id, err := identity.Parse([]byte(v.File))
			switch {
			case v.Error == "" && err != nil:
				t.Fatalf("Parse: %v", err)
			case v.Error == "" && id.Endpoint != "alice":
				t.Fatalf("endpoint %q", id.Endpoint)
			case v.Error != "" && (err == nil || err.Error() != v.Error):
				t.Fatalf("Parse error = %v, want %q", err, v.Error)
			}
		})
	}
}

// TestParsePublicStrict: the public file is parsed as strictly.
func TestParsePublicStrict(t *testing.T) {
	id, err := identity.New("alice")
	if err != nil {
		t.Fatal(err)
	}
	good, _ := id.Marshal()
	pub, _ := id.Public()
	goodPub := identity.MarshalPublic(pub)
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"unknown field", append(bytes.Clone(goodPub), "role: admin\n"...), `unknown field "role"`},
		{"field twice", append(bytes.Clone(goodPub), "xkey: "+pub.XKey+"\n"...), `field "xkey" given twice`},
		{"seeds", good, "this file holds seeds (an identity file?); pass the .pub file written by keygen"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := identity.ParsePublic(tt.data); err == nil || err.Error() != tt.want {
				t.Fatalf("error = %v, want %q", err, tt.want)
			}
		})
	}
}
