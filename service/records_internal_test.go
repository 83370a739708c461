package service

import (
	"regexp"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"
)

// kvKey is the alphabet a JetStream KV key may use.
var kvKey = regexp.MustCompile(`^[-/_=.a-zA-Z0-9]+$`)

func TestKeyNonce(t *testing.T) {
	kp, _ := nkeys.CreateUser()
	signer, _ := kp.PublicKey()
	other, _ := nkeys.CreateUser()
	otherSigner, _ := other.PublicKey()
	n1 := []byte("0123456789abcdef")
	n2 := []byte("0123456789abcdeg")
	binary := []byte{0, '.', '*', '>', ' ', 0xff, '\n', 0x80, 1, 2, 3, 4, 5, 6, 7, 8}

	k := keyNonce(signer, n1)
	if k != keyNonce(signer, append([]byte(nil), n1...)) {
		t.Fatal("keyNonce is not deterministic")
	}
	prefix := "nonce." + signer + "."
	if !strings.HasPrefix(k, prefix) || len(k) != len(prefix)+64 {
		t.Fatalf("keyNonce = %q, want %s<64 hex>", k, prefix)
	}
	tests := []struct {
		name string
		a, b string
	}{
		{"other nonce", keyNonce(signer, n1), keyNonce(signer, n2)},
		{"other signer", keyNonce(signer, n1), keyNonce(otherSigner, n1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.a == tt.b {
				t.Fatalf("same key %q", tt.a)
			}
		})
	}
	for _, n := range [][]byte{n1, binary} {
		if k := keyNonce(signer, n); !kvKey.MatchString(k) || strings.Count(k, ".") != 2 {
			t.Errorf("keyNonce(%x) = %q is not a three-token KV key", n, k)
		}
	}
}

func TestObjectName(t *testing.T) {
	var d1, d2 [32]byte
	d2[0] = 1
	tests := []struct {
		name  string
		room  string
		epoch uint64
		what  string
		d     [32]byte
		want  string
	}{
		{"bundle", "ops", 1, "bundle", d1, "ops/1/bundle-" + strings.Repeat("00", 16)},
		{"add", "ops", 7, "add-bob", d2, "ops/7/add-bob-01" + strings.Repeat("00", 15)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := objectName(tt.room, tt.epoch, tt.what, tt.d); got != tt.want {
				t.Fatalf("objectName = %q, want %q", got, tt.want)
			}
		})
	}
	if objectName("ops", 1, "bundle", d1) == objectName("ops", 1, "bundle", d2) {
		t.Fatal("two requests share an object name")
	}
	// purgeRoom lists a room's objects by the prefix "<room>/": a room whose
	// id extends another's must not match it.
	if strings.HasPrefix(objectName("ops1", 1, "bundle", d1), "ops/") {
		t.Fatal("objects of room ops1 match the prefix of room ops")
	}
}

func TestKeys(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{keyIdentity("alice"), "id.alice"},
		{keySigner("UABC"), "signer.UABC"},
		{keyRoom("ops"), "room.ops"},
		{keyMember("ops", "bob"), "member.ops.bob"},
		{keyEpRoom("bob", "ops"), "eprooms.bob.ops"},
		{keyEpoch("ops", 3), "epoch.ops.3"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if tt.got != tt.want {
				t.Fatalf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
	if !strings.HasPrefix(keyMember("ops", "bob"), prefixMembers("ops")) || strings.HasPrefix(keyMember("ops1", "bob"), prefixMembers("ops")) {
		t.Fatal("prefixMembers does not select exactly one room's members")
	}
	if !strings.HasPrefix(keyEpRoom("bob", "ops"), prefixEpRooms("bob")) || strings.HasPrefix(keyEpRoom("bob1", "ops"), prefixEpRooms("bob")) {
		t.Fatal("prefixEpRooms does not select exactly one endpoint's rooms")
	}
	for _, s := range []string{"chat.ops", "chat.žluť", "a-b_c"} {
		k := keySubject(s)
		if !kvKey.MatchString(k) || strings.Count(k, ".") != 1 || k == keySubject(s+"x") {
			t.Errorf("keySubject(%q) = %q", s, k)
		}
	}
	for key, fam := range map[string]string{"member.ops.bob": "member", "nonce.U.x": "nonce", "plain": "plain", "": ""} {
		if got := keyFamily(key); got != fam {
			t.Errorf("keyFamily(%q) = %q, want %q", key, got, fam)
		}
	}
}

func TestShort(t *testing.T) {
	tests := []struct {
		in   []string
		want string
	}{
		{nil, "none"},
		{[]string{"a"}, "[a]"},
		{[]string{"a", "b", "c", "d", "e", "f", "g"}, "[a b c d e] and 2 more"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := short(tt.in); got != tt.want {
				t.Fatalf("short(%v) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
