package callout

import (
	"encoding/base64"
	"testing"

	"github.com/nats-io/nkeys"
)

// TestSignedNonce: the callout admits a key only with a signature of the
// server's nonce by that key, in either base64 form nats clients send.
func TestSignedNonce(t *testing.T) {
	kp, _ := nkeys.CreateUser()
	other, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	nonce := "bm9uY2U"
	sig, _ := kp.Sign([]byte(nonce))
	bad, _ := other.Sign([]byte(nonce))
	for _, tc := range []struct {
		name, nonce, sig string
		ok               bool
	}{
		{"raw url", nonce, base64.RawURLEncoding.EncodeToString(sig), true},
		{"std", nonce, base64.StdEncoding.EncodeToString(sig), true},
		{"other key", nonce, base64.RawURLEncoding.EncodeToString(bad), false},
		{"other nonce", "other", base64.RawURLEncoding.EncodeToString(sig), false},
		{"no nonce", "", base64.RawURLEncoding.EncodeToString(sig), false},
		{"no signature", nonce, "", false},
		{"not base64", nonce, "!!", false},
	} {
		if got := signedNonce(pub, tc.nonce, tc.sig); got != tc.ok {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.ok)
		}
	}
}
