package identity_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/unibus/membership/identity"
)

// TestParsePublic checks the public file round trip and that a file holding
// seeds or broken keys is refused.
func TestParsePublic(t *testing.T) {
	id, err := identity.New("alice")
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := id.Public()
	idFile, _ := id.Marshal()
	good := identity.MarshalPublic(pub)
	tests := []struct {
		name string
		data []byte
		ok   bool
	}{
		{"written by keygen", good, true},
		{"identity file", idFile, false},
		{"seed as sign-key", []byte(strings.Replace(string(good), pub.SignKey, string(must(id.Sign.Seed())), 1)), false},
		{"xkey as sign-key", []byte(strings.Replace(string(good), pub.SignKey, pub.XKey, 1)), false},
		{"no endpoint", []byte(strings.Replace(string(good), "endpoint: alice\n", "", 1)), false},
		{"unknown field", append(bytes.Clone(good), "role: admin\n"...), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := identity.ParsePublic(tc.data)
			if tc.ok {
				if err != nil || got != pub {
					t.Fatalf("ParsePublic = %+v, %v; want %+v", got, err, pub)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParsePublic accepted %q", tc.data)
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
