package envelope_test

import (
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/envelope"
)

// TestKeysCanonical: nkeys' own validators accept a key with surrounding
// white space; the protocol accepts only the exact 56-character form.
func TestKeysCanonical(t *testing.T) {
	u, _ := nkeys.CreateUser()
	upub, _ := u.PublicKey()
	x, _ := nkeys.CreateCurveKeys()
	xpub, _ := x.PublicKey()
	s, _ := nkeys.CreateServer()
	spub, _ := s.PublicKey()
	if !nkeys.IsValidPublicUserKey("\r" + upub) {
		t.Log("nkeys no longer accepts a leading CR; the canonical check still must")
	}
	for _, tc := range []struct {
		name string
		fn   func(string) bool
		good string
	}{{"user", envelope.IsUserKey, upub}, {"curve", envelope.IsCurveKey, xpub}, {"server", envelope.IsServerKey, spub}} {
		if !tc.fn(tc.good) {
			t.Errorf("%s: canonical key refused", tc.name)
		}
		for _, bad := range []string{"\r" + tc.good, tc.good + "\n", " " + tc.good, tc.good[:55], tc.good + "A", ""} {
			if tc.fn(bad) {
				t.Errorf("%s: accepted %q", tc.name, bad)
			}
		}
	}
	if envelope.IsUserKey(xpub) || envelope.IsCurveKey(upub) || envelope.IsServerKey(upub) {
		t.Error("a key of another type was accepted")
	}
}
