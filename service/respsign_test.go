package service_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/subjects"
)

// TestRepliesAreSigned: successes and errors alike carry a signature of
// the configured service key over the request's nonce, the code, the reason
// and the body; changing any of them breaks it.
func TestRepliesAreSigned(t *testing.T) {
	spub := membertest.ServicePub()
	e := newEnv(t, service.Config{ServiceKey: membertest.ServiceKey()})
	if e.svc.PublicKey() != spub {
		t.Fatalf("PublicKey %s, want the configured %s", e.svc.PublicKey(), spub)
	}
	if got := e.svc.Micro().Info().Metadata["service_key"]; got != spub {
		t.Fatalf("micro metadata service_key %q, want %s", got, spub)
	}
	alice := e.register(t, "alice")
	verifier, _ := nkeys.FromPublicKey(spub)
	other, _ := nkeys.CreateServer()
	otherPub, _ := other.PublicKey()
	otherVerifier, _ := nkeys.FromPublicKey(otherPub)

	nonce := newNonce(t)
	cases := []struct {
		name  string
		op    subjects.Op
		data  []byte
		nonce []byte // what the reply must be bound to
		want  api.Kind
	}{
		{"success", subjects.OpWhoami, sign(t, alice.Sign, e.subject(subjects.OpWhoami), api.Empty{}, signOpts{nonce: nonce}), nonce, api.KindOther},
		{"forbidden", subjects.OpIdentityList, sign(t, alice.Sign, e.subject(subjects.OpIdentityList), api.PageRequest{}, signOpts{}), nil, api.KindForbidden},
		{"unsigned (no nonce decoded)", subjects.OpWhoami, nil, nil, api.KindUnauthenticated},
		{"malformed (no nonce decoded)", subjects.OpWhoami, []byte{0x81, 0xa1}, nil, api.KindInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := e.nc.Request(e.subject(tc.op), tc.data, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			// Bound to its request: the nonce where one was read, else
			// the request's SHA-256 (docs/protocol.md §16).
			if tc.nonce != nil {
				if err := client.VerifyReply(verifier, tc.nonce, m); err != nil {
					t.Fatalf("reply not bound to the request's nonce: %v", err)
				}
			}
			another := sign(t, alice.Sign, e.subject(tc.op), api.Empty{}, signOpts{})
			if got := api.KindFromReason(m.Header.Get(subjects.HeaderReason)); tc.want != api.KindOther && got != tc.want {
				t.Fatalf("reason %s, want %s", got, tc.want)
			}
			if m.Header.Get(subjects.HeaderServiceKey) != spub {
				t.Fatalf("service key header %q", m.Header.Get(subjects.HeaderServiceKey))
			}
			if err := client.VerifyReplyTo(verifier, tc.data, m); err != nil {
				t.Fatalf("genuine reply does not verify: %v", err)
			}
			if err := client.VerifyReplyTo(otherVerifier, tc.data, m); !errors.Is(err, client.ErrReplySignature) {
				t.Fatalf("verified with another key: %v", err)
			}
			if err := client.VerifyReplyTo(verifier, another, m); !errors.Is(err, client.ErrReplySignature) {
				t.Fatalf("verified for another request: %v", err)
			}
			tampered := *m
			tampered.Data = append([]byte{0xc0}, m.Data...)
			if err := client.VerifyReplyTo(verifier, tc.data, &tampered); !errors.Is(err, client.ErrReplySignature) {
				t.Fatalf("verified with a changed body: %v", err)
			}
			tampered = *m
			tampered.Header = nats.Header{}
			for k, v := range m.Header {
				tampered.Header[k] = v
			}
			tampered.Header.Set(micro.ErrorCodeHeader, "208")
			tampered.Header.Set(subjects.HeaderReason, api.KindAlreadyApplied.Reason())
			if err := client.VerifyReplyTo(verifier, tc.data, &tampered); !errors.Is(err, client.ErrReplySignature) {
				t.Fatalf("verified with a changed status: %v", err)
			}
		})
	}
}

func TestServiceKeyMustBeServerKey(t *testing.T) {
	user, _ := nkeys.CreateUser()
	cfg := service.Config{ServiceKey: user}
	if err := cfg.Validate(); err == nil {
		t.Fatal("a user key was accepted as service key")
	}
	verifyOnly, _ := nkeys.FromPublicKey(membertest.ServicePub())
	cfg = service.Config{ServiceKey: verifyOnly}
	if err := cfg.Validate(); err == nil {
		t.Fatal("a public key without its seed was accepted as service key")
	}
}
