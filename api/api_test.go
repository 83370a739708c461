package api_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/subjects"
)

func TestValidateID(t *testing.T) {
	tests := []struct {
		name string
		id   string
		ok   bool
	}{
		{"ok", "alice_01-x", true},
		{"one char", "a", true},
		{"64 chars", strings.Repeat("a", 64), true},
		{"empty", "", false},
		{"65 chars", strings.Repeat("a", 65), false},
		{"dot", "a.b", false},
		{"space", "a b", false},
		{"unicode", "alicé", false},
		{"star", "a*", false},
		{"gt", "a>", false},
		{"slash", "a/b", false},
		{"newline", "a\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := api.ValidateID("endpoint", tt.id)
			if tt.ok {
				if err != nil {
					t.Fatalf("ValidateID(%q) = %v, want nil", tt.id, err)
				}
				return
			}
			if !errors.Is(err, api.ErrInvalid) {
				t.Fatalf("ValidateID(%q) = %v, want ErrInvalid", tt.id, err)
			}
		})
	}
}

func TestValidateKeys(t *testing.T) {
	type gen func() (nkeys.KeyPair, error)
	kinds := []struct {
		name   string
		create gen
		user   bool
		curve  bool
	}{
		{"user", nkeys.CreateUser, true, false},
		{"curve", nkeys.CreateCurveKeys, false, true},
		{"account", nkeys.CreateAccount, false, false},
		{"operator", nkeys.CreateOperator, false, false},
		{"server", nkeys.CreateServer, false, false},
		{"cluster", nkeys.CreateCluster, false, false},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			kp, err := k.create()
			if err != nil {
				t.Fatal(err)
			}
			pub, err := kp.PublicKey()
			if err != nil {
				t.Fatal(err)
			}
			checkValid(t, "ValidateSigningKey", api.ValidateSigningKey(pub), k.user)
			checkValid(t, "ValidateXKey", api.ValidateXKey("xkey", pub), k.curve)
			// A seed is never a public key.
			seed, _ := kp.Seed()
			checkValid(t, "ValidateSigningKey(seed)", api.ValidateSigningKey(string(seed)), false)
			checkValid(t, "ValidateXKey(seed)", api.ValidateXKey("xkey", string(seed)), false)
		})
	}
	for _, bad := range []string{"", "U", "UABC", "not a key"} {
		t.Run(fmt.Sprintf("garbage %q", bad), func(t *testing.T) {
			checkValid(t, "ValidateSigningKey", api.ValidateSigningKey(bad), false)
			checkValid(t, "ValidateXKey", api.ValidateXKey("xkey", bad), false)
		})
	}
	t.Run("user key with a corrupted checksum", func(t *testing.T) {
		kp, _ := nkeys.CreateUser()
		pub, _ := kp.PublicKey()
		b := []byte(pub)
		last := b[len(b)-1]
		b[len(b)-1] = 'A'
		if last == 'A' {
			b[len(b)-1] = 'B'
		}
		checkValid(t, "ValidateSigningKey", api.ValidateSigningKey(string(b)), false)
	})
}

func checkValid(t *testing.T, what string, err error, ok bool) {
	t.Helper()
	if ok && err != nil {
		t.Errorf("%s = %v, want nil", what, err)
	}
	if !ok && !errors.Is(err, api.ErrInvalid) {
		t.Errorf("%s = %v, want ErrInvalid", what, err)
	}
}

func TestValidateRoomSubject(t *testing.T) {
	tests := []struct {
		name    string
		subject string
		ok      bool
	}{
		{"ok", "chat.ops", true},
		{"255 bytes", strings.Repeat("a", 255), true},
		{"star", "chat.*", false},
		{"gt", "chat.>", false},
		{"bare gt", ">", false},
		{"empty token", "a..b", false},
		{"leading dot", ".a", false},
		{"trailing dot", "a.", false},
		{"space", "a b", false},
		{"tab", "a\tb", false},
		{"256 bytes", strings.Repeat("a", 256), false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkValid(t, fmt.Sprintf("ValidateRoomSubject(%q)", tt.subject), api.ValidateRoomSubject(tt.subject), tt.ok)
		})
	}
}

func TestValidateSealed(t *testing.T) {
	tests := []struct {
		name string
		key  api.SealedKey
		want error // nil: valid
	}{
		{"ok", api.SealedKey{Endpoint: "bob", Sealed: []byte{1}}, nil},
		{"max size", api.SealedKey{Endpoint: "bob", Sealed: make([]byte, api.MaxSealedKey)}, nil},
		{"too large", api.SealedKey{Endpoint: "bob", Sealed: make([]byte, api.MaxSealedKey+1)}, api.ErrTooLarge},
		{"empty sealed", api.SealedKey{Endpoint: "bob", Sealed: []byte{}}, api.ErrInvalid},
		{"nil sealed", api.SealedKey{Endpoint: "bob"}, api.ErrInvalid},
		{"no endpoint", api.SealedKey{Sealed: []byte{1}}, api.ErrInvalid},
		{"bad endpoint", api.SealedKey{Endpoint: "b.o", Sealed: []byte{1}}, api.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := api.ValidateSealed(tt.key)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestPageLimit(t *testing.T) {
	tests := []struct {
		in, out int
		want    error
	}{
		{0, api.DefaultPage, nil},
		{1, 1, nil},
		{api.MaxPage, api.MaxPage, nil},
		{api.MaxPage + 1, 0, api.ErrTooLarge},
		{-1, 0, api.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.in), func(t *testing.T) {
			got, err := api.PageLimit(tt.in)
			if tt.want == nil {
				if err != nil || got != tt.out {
					t.Fatalf("PageLimit(%d) = %d, %v; want %d, nil", tt.in, got, err, tt.out)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("PageLimit(%d) error = %v, want %v", tt.in, err, tt.want)
			}
		})
	}
}

func TestKinds(t *testing.T) {
	tests := []struct {
		kind     api.Kind
		code     int
		reason   string
		sentinel *api.Error
	}{
		{api.KindInvalid, subjects.CodeBadRequest, "invalid", api.ErrInvalid},
		{api.KindTooLarge, subjects.CodeTooLarge, "too_large", api.ErrTooLarge},
		{api.KindUnauthenticated, subjects.CodeUnauthorized, "unauthenticated", api.ErrUnauthenticated},
		{api.KindReplay, subjects.CodeUnauthorized, "replay", api.ErrReplay},
		{api.KindForbidden, subjects.CodeForbidden, "forbidden", api.ErrForbidden},
		{api.KindNotFound, subjects.CodeNotFound, "not_found", api.ErrNotFound},
		{api.KindExists, subjects.CodeConflict, "exists", api.ErrExists},
		{api.KindConflict, subjects.CodeConflict, "conflict", api.ErrConflict},
		{api.KindUnavailable, subjects.CodeUnavailable, "unavailable", api.ErrUnavailable},
		{api.KindInternal, subjects.CodeInternal, "internal", api.ErrInternal},
		{api.KindAlreadyApplied, subjects.CodeAlreadyApplied, "already_applied", api.ErrAlreadyApplied},
		{api.KindRateLimited, subjects.CodeTooMany, "rate_limited", api.ErrRateLimited},
		{api.KindNonceFloor, subjects.CodeUnauthorized, "nonce_floor", api.ErrNonceFloor},
	}
	reasons, texts := map[string]bool{}, map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.reason, func(t *testing.T) {
			if got := tt.kind.Code(); got != tt.code {
				t.Errorf("Code = %d, want %d", got, tt.code)
			}
			if got := tt.kind.Reason(); got != tt.reason {
				t.Errorf("Reason = %q, want %q", got, tt.reason)
			}
			if got := api.KindFromReason(tt.kind.Reason()); got != tt.kind {
				t.Errorf("KindFromReason(%q) = %v, want %v", tt.kind.Reason(), got, tt.kind)
			}
			// String is for people: a description, not the token.
			if text := tt.kind.String(); text == "" || text == tt.reason || texts[text] {
				t.Errorf("String = %q: empty, the wire token or shared", text)
			}
			texts[tt.kind.String()] = true
			if reasons[tt.reason] {
				t.Errorf("reason %q shared by two kinds", tt.reason)
			}
			reasons[tt.reason] = true
			if tt.sentinel.Kind != tt.kind || tt.sentinel.Message != "" {
				t.Errorf("sentinel = %+v, want kind %v without message", tt.sentinel, tt.kind)
			}
			if got := api.KindOf(fmt.Errorf("wrapped: %w", api.E(tt.kind, "x"))); got != tt.kind {
				t.Errorf("KindOf(wrapped) = %v, want %v", got, tt.kind)
			}
		})
	}
	// Every kind up to the last one is covered above: a new kind must be
	// added to the table.
	if n := int(api.KindLast); len(tests) != n {
		t.Errorf("table has %d kinds, enum has %d", len(tests), n)
	}
	t.Run("other", func(t *testing.T) {
		if got := api.KindFromReason("no-such-reason"); got != api.KindOther {
			t.Errorf("KindFromReason(unknown) = %v", got)
		}
		if got := api.KindFromReason("other"); got != api.KindOther {
			t.Errorf("KindFromReason(other) = %v", got)
		}
		if got := api.KindOther.Code(); got != subjects.CodeInternal {
			t.Errorf("KindOther.Code = %d, want 500", got)
		}
		if got := api.Kind(999).Reason(); got != "other" {
			t.Errorf("Kind(999).Reason = %q", got)
		}
		if got := api.Kind(-1).Code(); got != subjects.CodeInternal {
			t.Errorf("Kind(-1).Code = %d, want 500", got)
		}
		if got := api.KindOf(errors.New("plain")); got != api.KindOther {
			t.Errorf("KindOf(plain) = %v", got)
		}
		if got := api.KindOf(nil); got != api.KindOther {
			t.Errorf("KindOf(nil) = %v", got)
		}
	})
}

func TestErrorIs(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		target error
		want   bool
	}{
		{"same kind, message vs sentinel", api.E(api.KindReplay, "nonce already used"), api.ErrReplay, true},
		{"same kind, other message", api.E(api.KindReplay, "something else"), api.ErrReplay, true},
		{"wrapped", fmt.Errorf("call: %w", api.E(api.KindForbidden, "no")), api.ErrForbidden, true},
		{"sentinel itself", api.ErrNotFound, api.ErrNotFound, true},
		{"different kind", api.E(api.KindReplay, "x"), api.ErrUnauthenticated, false},
		{"same code, different kind", api.E(api.KindExists, "x"), api.ErrConflict, false},
		{"same code, different kind (401)", api.E(api.KindUnauthenticated, "x"), api.ErrReplay, false},
		// A target with a message is a specific error, not a sentinel.
		{"target with message", api.E(api.KindReplay, "a"), api.E(api.KindReplay, "b"), false},
		{"plain error", errors.New("replay"), api.ErrReplay, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := errors.Is(tt.err, tt.target); got != tt.want {
				t.Fatalf("errors.Is(%v, %v) = %v, want %v", tt.err, tt.target, got, tt.want)
			}
		})
	}
}

func TestErrorText(t *testing.T) {
	err := api.E(api.KindNotFound, "room %s does not exist", "ops")
	if err.Kind != api.KindNotFound || err.Message != "room ops does not exist" {
		t.Fatalf("E = %+v", err)
	}
	// The code and reason lead the text so logs and `nats micro stats` show them.
	if got := err.Error(); !strings.HasPrefix(got, "404 not_found") {
		t.Fatalf("Error() = %q", got)
	}
}

// TestChainNames: each room has its own chain, the registry has one, and a
// chain name maps back to its room.
func TestChainNames(t *testing.T) {
	if got := api.RoomChain("ops"); got != "room.ops" {
		t.Errorf("RoomChain(ops) = %q", got)
	}
	tests := []struct {
		chain, room string
		ok          bool
	}{
		{api.RoomChain("ops"), "ops", true},
		{api.IdentitiesChain, "", true},
		{"room.", "", false},
		{"ops", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		if room, ok := api.ChainRoom(tt.chain); room != tt.room || ok != tt.ok {
			t.Errorf("ChainRoom(%q) = %q, %t; want %q, %t", tt.chain, room, ok, tt.room, tt.ok)
		}
	}
}
