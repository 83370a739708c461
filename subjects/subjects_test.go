package subjects_test

import (
	"regexp"
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

// microName is what nats.go micro accepts as an endpoint name.
var microName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func TestOps(t *testing.T) {
	if len(subjects.Ops) == 0 {
		t.Fatal("no ops")
	}
	ops := map[subjects.Op]bool{}
	names := map[string]subjects.Op{}
	subs := map[string]bool{}
	for _, op := range subjects.Ops {
		if ops[op] {
			t.Errorf("op %q listed twice", op)
		}
		ops[op] = true
		name := op.EndpointName()
		if !microName.MatchString(name) {
			t.Errorf("op %q: endpoint name %q is not a valid micro name", op, name)
		}
		if other, ok := names[name]; ok {
			t.Errorf("ops %q and %q share endpoint name %q", op, other, name)
		}
		names[name] = op
		sub := subjects.Subject(subjects.DefaultPrefix, op)
		if err := subjects.ValidateSubject(sub); err != nil {
			t.Errorf("op %q: subject %q: %v", op, sub, err)
		}
		if subs[sub] {
			t.Errorf("subject %q twice", sub)
		}
		subs[sub] = true
	}
	for _, op := range []subjects.Op{
		subjects.OpIdentityRegister, subjects.OpIdentityDisable, subjects.OpIdentityEnable,
		subjects.OpIdentityGet, subjects.OpIdentityList, subjects.OpWhoami,
		subjects.OpRoomCreate, subjects.OpRoomGet, subjects.OpRoomMembers, subjects.OpRoomKey,
		subjects.OpRoomAdd, subjects.OpRoomRemove, subjects.OpRoomLeave, subjects.OpRoomRekey,
		subjects.OpRoomDelete, subjects.OpRoomMine,
	} {
		if !ops[op] {
			t.Errorf("op %q missing from Ops", op)
		}
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
