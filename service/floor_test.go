package service_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/subjects"
)

// TestNonceFloor: after the read claims are lost (here: purged, as a crash
// would lose them), a read captured before the loss and replayed is
// refused, a read stamped now is refused with the floor, a read stamped at
// the floor is accepted, and the client library gets through on its own.
// Mutations are not affected: their nonces are durable.
func TestNonceFloor(t *testing.T) {
	// Without the local replay cache, which a real crash loses too: the
	// floor alone must refuse the captured read.
	e := newEnv(t, service.Config{ReplayCache: -1})
	ctx := natstest.Ctx(t, 2)
	adminKP := e.admin.Identity().Sign
	whoami := e.subject(subjects.OpWhoami)

	// The deployment's first incarnation has no floor: a read stamped
	// before the service started is accepted.
	request(t, e.nc, whoami, signAt(t, adminKP, whoami, time.Now().Add(-service.DefaultSkew/2))).expect(t, api.KindOther)

	captured := signAt(t, adminKP, whoami, time.Now())
	laterReplay := signAt(t, adminKP, whoami, time.Now().Add(service.DefaultSkew/2)) // stamped ahead, never sent before the loss
	request(t, e.nc, whoami, captured).expect(t, api.KindOther)

	js := natstest.JetStream(t, e.nc)
	s, err := js.Stream(ctx, subjects.ReadClaimsStream(subjects.DefaultBucket))
	if err != nil {
		t.Fatal(err)
	}
	lost := time.Now()
	if err := s.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	// The first read after the loss finds the marker gone (its claim's
	// publish is refused: a single replica); the replica adopts a new
	// incarnation at once, and the floor refuses the read.
	request(t, e.nc, whoami, signAt(t, adminKP, whoami, time.Now())).expect(t, api.KindNonceFloor)
	nonces := nonceCount(t, e.st)

	for name, data := range map[string][]byte{"captured before the loss": captured, "stamped ahead": laterReplay, "stamped now": signAt(t, adminKP, whoami, time.Now())} {
		r := request(t, e.nc, whoami, data)
		r.expect(t, api.KindNonceFloor)
		floor, err := strconv.ParseInt(r.header.Get(subjects.HeaderNonceFloor), 10, 64)
		if err != nil {
			t.Fatalf("%s: floor header %q", name, r.header.Get(subjects.HeaderNonceFloor))
		}
		if min := lost.Add(service.DefaultSkew).UnixMilli(); floor < min || floor > time.Now().Add(service.DefaultSkew).UnixMilli() {
			t.Fatalf("%s: floor %d, want between the loss + skew (%d) and now + skew", name, floor, min)
		}
	}
	if got := nonceCount(t, e.st); got != nonces {
		t.Fatalf("refused reads claimed %d nonces", got-nonces)
	}
	if got := rejections(t, e.svc, subjects.OpWhoami)["nonce_floor"]; got != 4 {
		t.Fatalf("rejections[nonce_floor] = %d, want 4", got)
	}

	// Stamped at the floor: accepted, once.
	r := request(t, e.nc, whoami, signAt(t, adminKP, whoami, time.Now()))
	floor, _ := strconv.ParseInt(r.header.Get(subjects.HeaderNonceFloor), 10, 64)
	atFloor := signAt(t, adminKP, whoami, time.UnixMilli(floor))
	request(t, e.nc, whoami, atFloor).expect(t, api.KindOther)
	request(t, e.nc, whoami, atFloor).expect(t, api.KindReplay)

	// Mutations have durable nonces and no floor; the client library
	// restamps reads by itself.
	e.register(t, "bob")
	if _, err := e.admin.Lookup(ctx, "bob"); err != nil {
		t.Fatalf("client read after the loss: %v", err)
	}
}

// signAt signs an empty body for subject at ts.
func signAt(t *testing.T, kp nkeys.KeyPair, subject string, ts time.Time) []byte {
	t.Helper()
	return sign(t, kp, subject, api.Empty{}, signOpts{ts: ts})
}
