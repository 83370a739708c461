package callout

import (
	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/envelope"
)

// issuerKey is the issuer's key pair with its Ed25519 keys derived once
// (envelope.NewKeySigner). nkeys derives the public and the private key
// from the seed on every PublicKey and Sign (a scalar multiplication
// each), and jwt asks for both per JWT: with two JWTs per answer, four
// multiplications per connection (docs/performance.md). The signatures are
// the same bytes (Ed25519 is deterministic).
type issuerKey struct {
	nkeys.KeyPair
	signer envelope.KeySigner
}

// newIssuerKey derives kp's keys; kp must hold a seed.
func newIssuerKey(kp nkeys.KeyPair) (*issuerKey, error) {
	s, err := envelope.NewKeySigner(kp)
	if err != nil {
		return nil, err
	}
	return &issuerKey{KeyPair: kp, signer: s}, nil
}

// PublicKey is the issuer's public key.
func (k *issuerKey) PublicKey() (string, error) { return k.signer.PublicKey() }

// Sign signs input with the issuer's key.
func (k *issuerKey) Sign(input []byte) ([]byte, error) { return k.signer.Sign(input) }
