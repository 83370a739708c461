package service_test

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/envelope"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/subjects"
)

func corruptSig(e *envelope.Envelope)  { e.Sig[0] ^= 0xff }
func corruptBody(e *envelope.Envelope) { e.Body = append(bytes.Clone(e.Body), 0xc0) }

// TestEnforce walks the pipeline's checks in enforce mode (the default):
// each failure has its own kind, cheapest check first, and a request that
// fails before the signer is known writes no nonce (H7).
func TestEnforce(t *testing.T) {
	e := newEnv(t, service.Config{MaxRequest: 2048})
	if got := e.svc.Micro().Info().Metadata["auth_mode"]; got != string(service.AuthEnforce) {
		t.Fatalf("auth_mode = %q, want enforce by default", got)
	}
	adminKP := e.admin.Identity().Sign
	bob := e.register(t, "bob")
	carol := e.register(t, "carol")
	if _, err := e.admin.Disable(natstest.Ctx(t, 2), "carol"); err != nil {
		t.Fatal(err)
	}
	stranger, _ := newUser(t)
	whoami := e.subject(subjects.OpWhoami)
	stale := time.Now().Add(-2 * service.DefaultSkew)

	tests := []struct {
		name   string
		data   []byte
		want   api.Kind
		reason string // stats rejection reason
	}{
		{"valid", sign(t, adminKP, whoami, api.Empty{}, signOpts{}), api.KindOther, ""},
		{"valid non-admin", sign(t, bob.Sign, whoami, api.Empty{}, signOpts{}), api.KindOther, ""},
		{"unsigned empty", nil, api.KindUnauthenticated, "unsigned"},
		{"unsigned map", []byte{0x80}, api.KindUnauthenticated, "unsigned"},
		{"not msgpack", []byte("hello"), api.KindInvalid, "malformed"},
		{"too large", bytes.Repeat([]byte{0x80}, 4096), api.KindTooLarge, "too_large"},
		{"stale", sign(t, adminKP, whoami, api.Empty{}, signOpts{ts: stale}), api.KindUnauthenticated, "stale"},
		{"future", sign(t, adminKP, whoami, api.Empty{}, signOpts{ts: time.Now().Add(2 * service.DefaultSkew)}), api.KindUnauthenticated, "stale"},
		{"body hash", sign(t, adminKP, whoami, api.Empty{}, signOpts{after: corruptBody}), api.KindInvalid, "bad_body_hash"},
		{"bad signature", sign(t, adminKP, whoami, api.Empty{}, signOpts{after: corruptSig}), api.KindUnauthenticated, "bad_signature"},
		{"signed for another subject", sign(t, adminKP, whoami, api.Empty{}, signOpts{subject: e.subject(subjects.OpIdentityGet)}), api.KindUnauthenticated, "bad_signature"},
		{"unknown signer", sign(t, stranger, whoami, api.Empty{}, signOpts{}), api.KindUnauthenticated, "unknown_signer"},
		{"disabled signer", sign(t, carol.Sign, whoami, api.Empty{}, signOpts{}), api.KindForbidden, "disabled"},
		// Cheapest first: the time window before the body hash, the body
		// hash before the signature.
		{"stale and bad body hash", sign(t, adminKP, whoami, api.Empty{}, signOpts{ts: stale, after: corruptBody}), api.KindUnauthenticated, "stale"},
		{"bad body hash and signature", sign(t, adminKP, whoami, api.Empty{}, signOpts{after: func(e *envelope.Envelope) { corruptBody(e); corruptSig(e) }}), api.KindInvalid, "bad_body_hash"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nonces := nonceCount(t, e.st)
			before := rejections(t, e.svc, subjects.OpWhoami)[tt.reason]
			request(t, e.nc, whoami, tt.data).expect(t, tt.want)
			if tt.want == api.KindOther {
				if got := nonceCount(t, e.st); got != nonces+1 {
					t.Fatalf("nonces %d → %d, want one claimed", nonces, got)
				}
				return
			}
			if got := nonceCount(t, e.st); got != nonces {
				t.Fatalf("a rejected request wrote a nonce: %d → %d", nonces, got)
			}
			if got := rejections(t, e.svc, subjects.OpWhoami)[tt.reason]; got != before+1 {
				t.Fatalf("rejections[%s] = %d, want %d", tt.reason, got, before+1)
			}
		})
	}

	t.Run("read replay", func(t *testing.T) {
		data := sign(t, adminKP, whoami, api.Empty{}, signOpts{})
		request(t, e.nc, whoami, data).expect(t, api.KindOther)
		request(t, e.nc, whoami, data).expect(t, api.KindReplay)
		// The same nonce with another body or subject is a replay too.
		n := newNonce(t)
		request(t, e.nc, whoami, sign(t, adminKP, whoami, api.Empty{}, signOpts{nonce: n})).expect(t, api.KindOther)
		get := e.subject(subjects.OpIdentityGet)
		request(t, e.nc, get, sign(t, adminKP, get, api.EndpointRequest{Endpoint: "bob"}, signOpts{nonce: n})).expect(t, api.KindReplay)
		// Nonces are per signer.
		request(t, e.nc, whoami, sign(t, bob.Sign, whoami, api.Empty{}, signOpts{nonce: n})).expect(t, api.KindOther)
	})

	t.Run("unknown signers claim no nonce", func(t *testing.T) {
		before := nonceCount(t, e.st)
		for range 5 {
			request(t, e.nc, whoami, sign(t, stranger, whoami, api.Empty{}, signOpts{})).expect(t, api.KindUnauthenticated)
		}
		if n := nonceCount(t, e.st); n != before {
			t.Fatalf("%d nonces stored for an unregistered key", n-before)
		}
		request(t, e.nc, whoami, sign(t, adminKP, whoami, api.Empty{}, signOpts{})).expect(t, api.KindOther)
		if n := nonceCount(t, e.st); n != before+1 {
			t.Fatalf("a valid read claimed %d nonces: the check above proves nothing", n-before)
		}
	})
}

// TestSoft: soft mode logs each failed check and lets the request through
// without a signer, so operations that need one answer 401 — whatever the
// check that failed — while valid requests work as in enforce mode.
func TestSoft(t *testing.T) {
	e := newEnv(t, service.Config{Auth: service.AuthSoft})
	adminKP := e.admin.Identity().Sign
	whoami := e.subject(subjects.OpWhoami)
	register := e.subject(subjects.OpIdentityRegister)
	roomGet := e.subject(subjects.OpRoomGet)
	stranger, strangerPub := newUser(t)
	xkey := newXKey(t)

	t.Run("valid read", func(t *testing.T) {
		r := request(t, e.nc, whoami, sign(t, adminKP, whoami, api.Empty{}, signOpts{}))
		r.expect(t, api.KindOther)
		var id api.Identity
		if err := msgpack.Unmarshal(r.data, &id); err != nil || id.Endpoint != "admin" || !id.Admin {
			t.Fatalf("whoami = %+v, %v", id, err)
		}
	})
	t.Run("valid mutation", func(t *testing.T) {
		e.register(t, "bob")
		if _, err := e.admin.Lookup(natstest.Ctx(t, 2), "bob"); err != nil {
			t.Fatalf("bob not registered: %v", err)
		}
	})

	tests := []struct {
		name    string
		subject string
		data    []byte
		want    api.Kind
	}{
		// In enforce mode each of these fails with its own check's error.
		{"bad signature", whoami, sign(t, adminKP, whoami, api.Empty{}, signOpts{after: corruptSig}), api.KindUnauthenticated},
		{"body hash (400 in enforce)", whoami, sign(t, adminKP, whoami, api.Empty{}, signOpts{after: corruptBody}), api.KindUnauthenticated},
		{"stale", whoami, sign(t, adminKP, whoami, api.Empty{}, signOpts{ts: time.Now().Add(-time.Hour)}), api.KindUnauthenticated},
		{"unknown signer", whoami, sign(t, stranger, whoami, api.Empty{}, signOpts{}), api.KindUnauthenticated},
		// The body is decoded before the signer is required: a bad
		// signature no longer decides the answer.
		{"bad signature, bad body (401 in enforce)", roomGet, sign(t, adminKP, roomGet, map[string]int{"zzz": 1}, signOpts{after: corruptSig}), api.KindInvalid},
		{"mutation with bad signature", register, sign(t, adminKP, register,
			api.RegisterRequest{Endpoint: "mallory", SignKey: strangerPub, XKey: xkey, Admin: true}, signOpts{after: corruptSig}), api.KindUnauthenticated},
		// Without an envelope there is nothing to let through.
		{"unsigned", whoami, nil, api.KindUnauthenticated},
		{"malformed", whoami, []byte("hello"), api.KindInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nonces := nonceCount(t, e.st)
			request(t, e.nc, tt.subject, tt.data).expect(t, tt.want)
			if got := nonceCount(t, e.st); got != nonces {
				t.Fatalf("a request without a verified signer wrote a nonce: %d → %d", nonces, got)
			}
		})
	}

	t.Run("stats count the let-through, not the signature", func(t *testing.T) {
		rej := rejections(t, e.svc, subjects.OpWhoami)
		if rej["bad_signature"] != 0 || rej["stale"] != 0 || rej["unauthenticated"] == 0 {
			t.Fatalf("whoami rejections = %v, want only unauthenticated", rej)
		}
	})
	t.Run("nothing registered", func(t *testing.T) {
		if _, err := e.admin.Lookup(natstest.Ctx(t, 2), "mallory"); err == nil {
			t.Fatal("a mutation with a bad signature registered mallory")
		}
	})
}

// TestOff: with authentication off no request has a signer, so every
// operation answers 401 even to a valid admin signature.
func TestOff(t *testing.T) {
	e := newEnv(t, service.Config{Auth: service.AuthOff})
	adminKP := e.admin.Identity().Sign
	for _, o := range api.Ops {
		t.Run(string(o.Op), func(t *testing.T) {
			subject := e.subject(o.Op)
			request(t, e.nc, subject, sign(t, adminKP, subject, api.Empty{}, signOpts{})).expect(t, api.KindUnauthenticated)
		})
	}
	if n := nonceCount(t, e.st); n != 0 {
		t.Fatalf("auth off wrote %d nonces", n)
	}
	t.Run("malformed", func(t *testing.T) {
		request(t, e.nc, e.subject(subjects.OpWhoami), []byte("hello")).expect(t, api.KindInvalid)
	})
	if got := e.svc.Micro().Info().Metadata["auth_mode"]; got != "off" {
		t.Fatalf("auth_mode = %q", got)
	}
}

// TestAlreadyApplied: a mutation's nonce records its digest and reply, so
// the very same signed bytes sent again — to any replica — apply nothing
// and get 208 with the original reply; any other use of the nonce is a
// replay, and a mutation that failed claimed no nonce.
func TestAlreadyApplied(t *testing.T) {
	e := newEnv(t, service.Config{})
	e.replica(t) // a second replica in the same queue group
	adminKP := e.admin.Identity().Sign
	register := e.subject(subjects.OpIdentityRegister)
	disable := e.subject(subjects.OpIdentityDisable)
	_, bobPub := newUser(t)
	bobX := newXKey(t)
	nonce := newNonce(t)
	data := sign(t, adminKP, register, api.RegisterRequest{Endpoint: "bob", SignKey: bobPub, XKey: bobX}, signOpts{nonce: nonce})

	first := request(t, e.nc, register, data)
	first.expect(t, api.KindOther)
	var id api.Identity
	if err := msgpack.Unmarshal(first.data, &id); err != nil || id.Endpoint != "bob" {
		t.Fatalf("register reply = %+v, %v", id, err)
	}

	t.Run("same bytes again", func(t *testing.T) {
		for range 4 { // the queue group spreads them over both replicas
			r := request(t, e.nc, register, data)
			r.expect(t, api.KindAlreadyApplied)
			if r.code != subjects.CodeAlreadyApplied || !bytes.Equal(r.data, first.data) {
				t.Fatalf("resend = %d %q, want 208 with the original reply", r.code, r.data)
			}
		}
	})
	t.Run("same nonce, other body", func(t *testing.T) {
		other := sign(t, adminKP, register, api.RegisterRequest{Endpoint: "bob2", SignKey: bobPub, XKey: bobX}, signOpts{nonce: nonce})
		request(t, e.nc, register, other).expect(t, api.KindReplay)
		if _, err := e.admin.Lookup(natstest.Ctx(t, 2), "bob2"); err == nil {
			t.Fatal("the replayed nonce registered bob2")
		}
	})
	t.Run("same nonce, other operation", func(t *testing.T) {
		other := sign(t, adminKP, disable, api.EndpointRequest{Endpoint: "bob"}, signOpts{nonce: nonce})
		request(t, e.nc, disable, other).expect(t, api.KindReplay)
		if pk, err := e.admin.Lookup(natstest.Ctx(t, 2), "bob"); err != nil || pk.Disabled {
			t.Fatalf("bob = %+v, %v; want enabled", pk, err)
		}
	})
	t.Run("nonce of a read", func(t *testing.T) {
		// Reads and mutations claim nonces in separate stores
		// (docs/protocol.md §9): each is single-use within its class, on
		// every replica alike (the queue group spreads the copies). A
		// captured read cannot become a mutation: the signature binds
		// the subject.
		n := newNonce(t)
		whoami := e.subject(subjects.OpWhoami)
		read := sign(t, adminKP, whoami, api.Empty{}, signOpts{nonce: n})
		request(t, e.nc, whoami, read).expect(t, api.KindOther)
		mutation := sign(t, adminKP, disable, api.EndpointRequest{Endpoint: "bob"}, signOpts{nonce: n})
		request(t, e.nc, disable, mutation).expect(t, api.KindOther)
		for range 4 {
			request(t, e.nc, whoami, read).expect(t, api.KindReplay)
			request(t, e.nc, disable, mutation).expect(t, api.KindAlreadyApplied)
			request(t, e.nc, whoami, sign(t, adminKP, whoami, api.Empty{}, signOpts{nonce: n})).expect(t, api.KindReplay)
		}
		enable := e.subject(subjects.OpIdentityEnable)
		request(t, e.nc, enable, sign(t, adminKP, enable, api.EndpointRequest{Endpoint: "bob"}, signOpts{nonce: n})).expect(t, api.KindReplay)
		request(t, e.nc, enable, sign(t, adminKP, enable, api.EndpointRequest{Endpoint: "bob"}, signOpts{})).expect(t, api.KindOther)
	})
	t.Run("failed mutation claims no nonce", func(t *testing.T) {
		failing := sign(t, adminKP, disable, api.EndpointRequest{Endpoint: "nobody"}, signOpts{})
		for range 3 {
			request(t, e.nc, disable, failing).expect(t, api.KindNotFound)
		}
	})
	t.Run("state applied once", func(t *testing.T) {
		page, err := e.admin.Identities(natstest.Ctx(t, 2), "", 0)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, id := range page.Identities {
			names = append(names, id.Endpoint)
		}
		if strings.Join(names, ",") != "admin,bob" {
			t.Fatalf("identities = %v", names)
		}
	})
}

// TestPagination pages through identities with every page size.
func TestPagination(t *testing.T) {
	e := newEnv(t, service.Config{})
	want := []string{"admin"}
	for _, n := range []string{"a1", "b2", "c3", "d4", "e5"} {
		e.register(t, n)
		want = append(want, n)
	}
	ctx := natstest.Ctx(t, 2)
	for limit := 1; limit <= len(want)+1; limit++ {
		var got []string
		after, pages := "", 0
		for {
			p, err := e.admin.Identities(ctx, after, limit)
			if err != nil {
				t.Fatalf("limit %d: %v", limit, err)
			}
			if len(p.Identities) > limit {
				t.Fatalf("limit %d: page of %d", limit, len(p.Identities))
			}
			for _, id := range p.Identities {
				got = append(got, id.Endpoint)
			}
			pages++
			if p.Next == "" || pages > len(want)+1 {
				break
			}
			after = p.Next
		}
		sortedWant := append([]string(nil), want...)
		slices.Sort(sortedWant)
		if strings.Join(got, ",") != strings.Join(sortedWant, ",") {
			t.Fatalf("limit %d: got %v, want %v", limit, got, sortedWant)
		}
	}
	if _, err := e.admin.Identities(ctx, "a.b", 0); !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("bad cursor = %v, want ErrInvalid", err)
	}
	if _, err := e.admin.Identities(ctx, "", -1); !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("negative limit = %v, want ErrInvalid", err)
	}
	if _, err := e.admin.Identities(ctx, "", api.MaxPage+1); !errors.Is(err, api.ErrTooLarge) {
		t.Fatalf("limit > max = %v, want ErrTooLarge", err)
	}
}
