package callout

import (
	"bytes"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// TestIssuerKey: the issuer with its keys derived once signs the very bytes
// nkeys does, and a user JWT it encodes decodes and verifies with the
// issuer's public key.
func TestIssuerKey(t *testing.T) {
	kp, _ := nkeys.CreateAccount()
	ik, err := newIssuerKey(kp)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	if got, _ := ik.PublicKey(); got != pub {
		t.Fatalf("public key %s, want %s", got, pub)
	}
	msg := []byte("nonce")
	want, _ := kp.Sign(msg)
	if got, _ := ik.Sign(msg); !bytes.Equal(got, want) {
		t.Fatal("signature differs from nkeys'")
	}
	user, _ := nkeys.CreateUser()
	upub, _ := user.PublicKey()
	tok, err := jwt.NewUserClaims(upub).Encode(ik)
	if err != nil {
		t.Fatal(err)
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil || uc.Issuer != pub {
		t.Fatalf("decoded %+v, %v: want issued by %s", uc, err, pub)
	}
	pubOnly, _ := nkeys.FromPublicKey(pub)
	if _, err := newIssuerKey(pubOnly); err == nil {
		t.Fatal("an issuer without a seed was accepted")
	}
}
