package envelope_test

import (
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/envelope"
)

// The CPU a signed request costs before any store work: what bounds
// read_vs_echo on a machine whose cores the clients share
// (docs/performance.md, "What limits remain").
// Run: go test -run - -bench . -count 5 ./envelope/

func benchSign(b *testing.B, ks envelope.KeySigner) {
	body := []byte{0x81, 0xa4, 'r', 'o', 'o', 'm', 0xa2, 'r', '1'}
	nonce := make([]byte, envelope.NonceSize)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := envelope.Sign(ks, testSubject, time.Now(), nonce, body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignNkeys signs with an nkeys key pair, which derives the
// Ed25519 key from its seed on every call.
func BenchmarkSignNkeys(b *testing.B) {
	kp, _ := nkeys.CreateUser()
	benchSign(b, kp)
}

// BenchmarkSignKeySigner signs with the key derived once.
func BenchmarkSignKeySigner(b *testing.B) {
	kp, _ := nkeys.CreateUser()
	ks, err := envelope.NewKeySigner(kp)
	if err != nil {
		b.Fatal(err)
	}
	benchSign(b, ks)
}

// BenchmarkDecodeVerify is the service's side: strict decode, body hash and
// signature check.
func BenchmarkDecodeVerify(b *testing.B) {
	kp, _ := nkeys.CreateUser()
	e, err := envelope.New(kp, testSubject, []byte{0x80})
	if err != nil {
		b.Fatal(err)
	}
	data, _ := e.Marshal()
	b.ReportAllocs()
	for b.Loop() {
		d, err := envelope.Decode(data)
		if err != nil {
			b.Fatal(err)
		}
		if err := d.Verify(testSubject, time.Now(), time.Minute); err != nil {
			b.Fatal(err)
		}
	}
}
