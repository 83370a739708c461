package subjects_test

import (
	"strings"
	"testing"

	"github.com/unibus/membership/subjects"
)

func TestValidateSubject(t *testing.T) {
	tests := []struct {
		name    string
		subject string
		ok      bool
	}{
		{"single token", "chat", true},
		{"dotted", "chat.ops.eu", true},
		{"dashes and underscores", "a-b.c_d", true},
		{"unicode token", "chat.žluť", true},
		{"255 bytes", strings.Repeat("a", 255), true},
		{"empty", "", false},
		{"256 bytes", strings.Repeat("a", 256), false},
		{"star token", "chat.*", false},
		{"gt token", "chat.>", false},
		{"star inside token", "chat.a*b", false},
		{"gt inside token", "chat.a>b", false},
		{"empty token", "a..b", false},
		{"leading dot", ".a", false},
		{"trailing dot", "a.", false},
		{"lone dot", ".", false},
		{"space", "a b", false},
		{"tab", "a\tb", false},
		{"newline", "a\nb", false},
		{"NUL", "a\x00b", false},
		{"DEL", "a\x7fb", false},
		{"invalid UTF-8", "a.\xff", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := subjects.ValidateSubject(tt.subject)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidateSubject(%q) = %v, want ok=%v", tt.subject, err, tt.ok)
			}
			perr := subjects.ValidatePrefix(tt.subject)
			if (perr == nil) != tt.ok {
				t.Fatalf("ValidatePrefix(%q) = %v, want ok=%v", tt.subject, perr, tt.ok)
			}
		})
	}
}

func TestSubjectAndEndpointName(t *testing.T) {
	tests := []struct {
		prefix   string
		op       subjects.Op
		subject  string
		endpoint string
	}{
		{subjects.DefaultPrefix, subjects.OpRoomCreate, "unibus.membership.v1.room.create", "room_create"},
		{"x", subjects.OpWhoami, "x.identity.whoami", "identity_whoami"},
		{"a.b", subjects.OpIdentityRegister, "a.b.identity.register", "identity_register"},
	}
	for _, tt := range tests {
		t.Run(string(tt.op), func(t *testing.T) {
			if got := subjects.Subject(tt.prefix, tt.op); got != tt.subject {
				t.Errorf("Subject(%q, %q) = %q, want %q", tt.prefix, tt.op, got, tt.subject)
			}
			if got := tt.op.EndpointName(); got != tt.endpoint {
				t.Errorf("EndpointName(%q) = %q, want %q", tt.op, got, tt.endpoint)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	for _, s := range []string{subjects.DefaultPrefix, subjects.DefaultQueue} {
		if err := subjects.ValidateSubject(s); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
}

// TestReadClaimsNames: the read-claims stream's names as docs/security.md
// §4a and the operators' `nats stream ls` show them.
func TestReadClaimsNames(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{subjects.ReadClaimsStream("membership"), "membership-reads"},
		{subjects.ReadClaims("membership"), "$RN.membership.>"},
		{subjects.ReadClaim("membership"), "$RN.membership.n"},
		{subjects.ReadIncarnations("membership"), "$RN.membership.inc."},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}
