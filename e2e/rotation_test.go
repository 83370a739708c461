package e2e

import (
	"encoding/base64"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
)

func serverKey(t *testing.T) (nkeys.KeyPair, string) {
	t.Helper()
	kp, err := nkeys.CreateServer()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	return kp, pub
}

// TestServiceKeyPinning (issue 11): a client given no key pins the first
// verified reply's key (trust on first use) and is told so; a client pinned
// to one key moves to a new one only through a rotation statement signed by
// the old key; a forged statement, or none, is refused with both keys named.
func TestServiceKeyPinning(t *testing.T) {
	ctx := natstest.Ctx(t, 3)
	k1, p1 := serverKey(t)
	k2, p2 := serverKey(t)
	k3, p3 := serverKey(t)
	s := natstest.Server(t)
	svc := membertest.Service(t, s, service.Config{ServiceKey: k1})
	admin := membertest.Admin(t, s)
	alice := membertest.Member(t, s, admin, "alice")

	var pins [][2]string
	record := client.WithPinned(func(old, new string) { pins = append(pins, [2]string{old, new}) })
	// Retries ride out the moment between one replica stopping and the next
	// being subscribed (no responders is retried).
	cl := client.New(natstest.Connect(t, s), alice.Identity(), record, client.WithTimeout(time.Second))
	if _, err := cl.Whoami(ctx); err != nil {
		t.Fatal(err)
	}
	if cl.ServiceKey() != p1 || len(pins) != 1 || pins[0] != [2]string{"", p1} {
		t.Fatalf("first use pinned %q, told %v; want %s", cl.ServiceKey(), pins, p1)
	}

	// The operator rotates: the replica restarts with k2 and the old k1.
	_ = svc.Stop()
	svc = membertest.Service(t, s, service.Config{ServiceKey: k2, PreviousServiceKey: k1})
	if _, err := cl.Whoami(ctx); err != nil {
		t.Fatalf("after a rotation signed by the pinned key: %v", err)
	}
	if cl.ServiceKey() != p2 || len(pins) != 2 || pins[1] != [2]string{p1, p2} {
		t.Fatalf("after rotation pinned %q, told %v; want %s", cl.ServiceKey(), pins, p2)
	}

	// A replica with k3 and a statement signed by k3 (not by the pinned
	// k2) claiming to succeed k2: forged, refused.
	_ = svc.Stop()
	forged, _ := k3.Sign(api.RotationCanonical(p2, p3))
	membertest.Service(t, s, service.Config{ServiceKey: k3, Metadata: map[string]string{
		api.MetaPreviousKey: p2, api.MetaRotationSig: base64.RawURLEncoding.EncodeToString(forged)}})
	_, err := cl.Whoami(ctx)
	var mismatch *client.KeyMismatchError
	if !errors.As(err, &mismatch) || mismatch.Pinned != p2 || mismatch.Offered != p3 || !errors.Is(err, client.ErrReplySignature) {
		t.Fatalf("forged rotation: %v, want a KeyMismatchError naming %s and %s", err, p2, p3)
	}
	if cl.ServiceKey() != p2 || len(pins) != 2 {
		t.Fatalf("forged rotation moved the pin to %q (told %v)", cl.ServiceKey(), pins)
	}

	// A client pinned to k1 cannot skip to k3 either, and one opting out
	// verifies nothing.
	old := client.New(natstest.Connect(t, s), alice.Identity(), client.WithServiceKey(p1), client.WithTimeout(time.Second), client.WithRetries(0))
	if _, err := old.Whoami(ctx); !errors.As(err, &mismatch) {
		t.Fatalf("pinned to k1 against k3: %v, want a KeyMismatchError", err)
	}
	unverified := client.New(natstest.Connect(t, s), alice.Identity(), client.WithUnverifiedReplies())
	if _, err := unverified.Whoami(ctx); err != nil || unverified.ServiceKey() != "" {
		t.Fatalf("opt-out: %v, key %q", err, unverified.ServiceKey())
	}
}
