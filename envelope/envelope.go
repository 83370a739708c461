package envelope

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nkeys"
	"github.com/vmihailenco/msgpack/v5"
)

// Version is the envelope version this package produces and accepts.
const Version = 1

// Label is the domain-separation label that starts the canonical bytes.
const Label = "unibus-membership-request-v1"

// Limits on envelope fields.
const (
	MinNonce  = 16
	MaxNonce  = 64
	HashSize  = sha256.Size
	SigSize   = 64
	NonceSize = 24 // what [Sign] generates
)

// Errors returned by [Decode] and the checks, to be matched with [errors.Is].
var (
	ErrVersion   = errors.New("unsupported envelope version")
	ErrField     = errors.New("invalid envelope field")
	ErrBodyHash  = errors.New("body hash does not match body")
	ErrSignature = errors.New("bad signature")
	ErrStale     = errors.New("timestamp outside the accepted window")
	ErrUnsigned  = errors.New("request is not a signed envelope")
)

// Envelope is a signed request. See the package documentation for the wire
// form.
type Envelope struct {
	Version  uint8  `msgpack:"v"`
	TS       int64  `msgpack:"ts"`
	Nonce    []byte `msgpack:"nonce"`
	Signer   string `msgpack:"signer"`
	BodyHash []byte `msgpack:"body_hash"`
	Sig      []byte `msgpack:"sig"`
	Body     []byte `msgpack:"body"`
}

// Canonical returns the bytes a signature covers:
//
//	u32be(len(Label))   Label
//	u32be(len(subject)) subject
//	i64be(ts)
//	u32be(len(nonce))   nonce
//	u32be(len(signer))  signer
//	u32be(32)           bodyHash
//
// Every variable-length field carries its length, so no two distinct field
// tuples produce the same bytes.
func Canonical(subject string, ts int64, nonce []byte, signer string, bodyHash []byte) []byte {
	n := 4*5 + 8 + len(Label) + len(subject) + len(nonce) + len(signer) + len(bodyHash)
	b := make([]byte, 0, n)
	b = appendField(b, []byte(Label))
	b = appendField(b, []byte(subject))
	b = binary.BigEndian.AppendUint64(b, uint64(ts))
	b = appendField(b, nonce)
	b = appendField(b, []byte(signer))
	b = appendField(b, bodyHash)
	return b
}

func appendField(b, f []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
	return append(b, f...)
}

// Sign builds an envelope for body, to be sent to subject, signed by kp (an
// nkeys user key, or a [KeySigner] from [NewKeySigner]) at ts with the given
// nonce. Use [New] for a fresh nonce and the current time.
func Sign(kp KeySigner, subject string, ts time.Time, nonce, body []byte) (*Envelope, error) {
	signer, err := kp.PublicKey()
	if err != nil {
		return nil, err
	}
	if err := checkSigner(signer); err != nil {
		return nil, err
	}
	if len(nonce) < MinNonce || len(nonce) > MaxNonce {
		return nil, fmt.Errorf("%w: nonce must be %d–%d bytes", ErrField, MinNonce, MaxNonce)
	}
	sum := sha256.Sum256(body)
	e := &Envelope{
		Version:  Version,
		TS:       ts.UnixMilli(),
		Nonce:    bytes.Clone(nonce),
		Signer:   signer,
		BodyHash: sum[:],
		Body:     body,
	}
	if e.Sig, err = kp.Sign(e.Canonical(subject)); err != nil {
		return nil, err
	}
	return e, nil
}

// New signs body for subject now, with a random nonce of [NonceSize] bytes.
func New(kp KeySigner, subject string, body []byte) (*Envelope, error) {
	nonce := make([]byte, NonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return Sign(kp, subject, time.Now(), nonce, body)
}

// Canonical returns the bytes e's signature covers when sent to subject.
func (e *Envelope) Canonical(subject string) []byte {
	return Canonical(subject, e.TS, e.Nonce, e.Signer, e.BodyHash)
}

// Digest identifies one signed request: SHA-256 of its canonical bytes. Two
// envelopes with the same digest carry the same subject, ts, nonce, signer
// and body.
func (e *Envelope) Digest(subject string) [32]byte {
	return sha256.Sum256(e.Canonical(subject))
}

// Marshal encodes e as msgpack.
func (e *Envelope) Marshal() ([]byte, error) { return msgpack.Marshal(e) }

// wireEnvelope is [Envelope] as [Decode] reads it. Its version is 64 bits
// wide because msgpack narrows integers silently: decoded into a uint8, the
// version 257 would read as 1.
type wireEnvelope struct {
	Version  uint64 `msgpack:"v"`
	TS       int64  `msgpack:"ts"`
	Nonce    []byte `msgpack:"nonce"`
	Signer   string `msgpack:"signer"`
	BodyHash []byte `msgpack:"body_hash"`
	Sig      []byte `msgpack:"sig"`
	Body     []byte `msgpack:"body"`
}

func isMapHeader(c byte) bool { return (c >= 0x80 && c <= 0x8f) || c == 0xde || c == 0xdf }

// Decode parses an envelope strictly and checks the form of every field:
// version, nonce length, signer key type, hash and signature sizes. It does
// not check the time, the body hash or the signature; see [Envelope.Verify].
func Decode(b []byte) (*Envelope, error) {
	// msgpack also decodes a struct from an array of its field values; the
	// protocol allows only the map form.
	if len(b) == 0 {
		return nil, ErrUnsigned
	}
	if !isMapHeader(b[0]) {
		return nil, malformed("an envelope must be a msgpack map")
	}
	var w wireEnvelope
	if err := Unmarshal(b, &w); err != nil {
		return nil, err
	}
	if len(w.Sig) == 0 {
		return nil, ErrUnsigned // an empty message or a map without sig
	}
	if w.Version != Version {
		return nil, fmt.Errorf("%w %d", ErrVersion, w.Version)
	}
	e := Envelope{Version: Version, TS: w.TS, Nonce: w.Nonce, Signer: w.Signer,
		BodyHash: w.BodyHash, Sig: w.Sig, Body: w.Body}
	switch {
	case len(e.Nonce) < MinNonce || len(e.Nonce) > MaxNonce:
		return nil, fmt.Errorf("%w: nonce must be %d–%d bytes, got %d", ErrField, MinNonce, MaxNonce, len(e.Nonce))
	case len(e.BodyHash) != HashSize:
		return nil, fmt.Errorf("%w: body_hash must be %d bytes, got %d", ErrField, HashSize, len(e.BodyHash))
	case len(e.Sig) != SigSize:
		return nil, fmt.Errorf("%w: sig must be %d bytes, got %d", ErrField, SigSize, len(e.Sig))
	case e.TS <= 0:
		return nil, fmt.Errorf("%w: ts must be positive Unix milliseconds", ErrField)
	}
	if err := checkSigner(e.Signer); err != nil {
		return nil, err
	}
	return &e, nil
}

// RequestNonce returns the nonce of a request as the service reads it for
// binding its reply (docs/protocol.md §16): the nonce of a message that
// decodes strictly as an envelope map and carries a nonce of [MinNonce]–
// [MaxNonce] bytes, whatever else is wrong with it; nil otherwise, and then
// the reply is bound to SHA-256 of the request bytes instead. A request
// over the service's size limit is never read: callers do not ask.
func RequestNonce(b []byte) []byte {
	if len(b) == 0 || !isMapHeader(b[0]) {
		return nil
	}
	var w wireEnvelope
	if Unmarshal(b, &w) != nil || len(w.Nonce) < MinNonce || len(w.Nonce) > MaxNonce {
		return nil
	}
	return w.Nonce
}

// checkSigner accepts only nkeys user public keys: nkeys.FromPublicKey alone
// accepts any key type, and an account, server or curve key must never sign
// a request.
func checkSigner(signer string) error {
	if !IsUserKey(signer) {
		return fmt.Errorf("%w: signer must be an nkeys user public key (U…)", ErrField)
	}
	return nil
}

// CheckTime fails with [ErrStale] unless ts is within skew of now.
func (e *Envelope) CheckTime(now time.Time, skew time.Duration) error {
	d := now.Sub(time.UnixMilli(e.TS))
	if d > skew || d < -skew {
		return fmt.Errorf("%w (±%s)", ErrStale, skew)
	}
	return nil
}

// CheckBodyHash fails with [ErrBodyHash] unless body_hash is SHA-256(body).
func (e *Envelope) CheckBodyHash() error {
	sum := sha256.Sum256(e.Body)
	if subtle.ConstantTimeCompare(sum[:], e.BodyHash) != 1 {
		return ErrBodyHash
	}
	return nil
}

// CheckSignature fails with [ErrSignature] unless sig is the signer's
// signature over the canonical bytes for subject, and with [ErrField] if the
// signer is not an nkeys user public key.
func (e *Envelope) CheckSignature(subject string) error {
	// Decode checked this already, but an Envelope built by other means
	// must not let an account, server or curve key sign either.
	if err := checkSigner(e.Signer); err != nil {
		return err
	}
	kp, err := nkeys.FromPublicKey(e.Signer)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrField, err)
	}
	if err := kp.Verify(e.Canonical(subject), e.Sig); err != nil {
		return ErrSignature
	}
	return nil
}

// Verify runs every check in the order the service applies them, cheapest
// first: time window, body hash, signature.
func (e *Envelope) Verify(subject string, now time.Time, skew time.Duration) error {
	_, err := e.Check(subject, now, skew, nil)
	return err
}

// Check is [Envelope.Verify] with a look at the request between the cheap
// checks and the costly one: once the time window and the body hash passed,
// it calls seen (unless nil) with the request's [Envelope.Digest], and
// returns seen's error as it is, before the signature is verified. That is
// where a service refuses a nonce it saw claimed without spending a
// signature verification on every copy of a flood. It returns the digest.
func (e *Envelope) Check(subject string, now time.Time, skew time.Duration, seen func(digest [32]byte) error) ([32]byte, error) {
	if err := e.CheckTime(now, skew); err != nil {
		return [32]byte{}, err
	}
	if err := e.CheckBodyHash(); err != nil {
		return [32]byte{}, err
	}
	digest := e.Digest(subject)
	if seen != nil {
		if err := seen(digest); err != nil {
			return digest, err
		}
	}
	return digest, e.CheckSignature(subject)
}

// KeySigner is what signing needs of a key; an nkeys.KeyPair is one.
type KeySigner interface {
	PublicKey() (string, error)
	Sign(input []byte) ([]byte, error)
}

// NewKeySigner returns a signer for kp's key that derives the Ed25519 private
// key once. nkeys derives it from the seed on every Sign, a scalar
// multiplication that costs as much as the signature itself
// (docs/performance.md). Ed25519 signatures are deterministic, so both sign
// alike (TestKeySignerMatchesNkeys). kp must hold its seed.
func NewKeySigner(kp nkeys.KeyPair) (KeySigner, error) {
	seed, err := kp.Seed()
	if err != nil {
		return nil, err
	}
	_, raw, err := nkeys.DecodeSeed(seed)
	if err != nil {
		return nil, err
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, err
	}
	return &keySigner{pub: pub, priv: ed25519.NewKeyFromSeed(raw)}, nil
}

type keySigner struct {
	pub  string
	priv ed25519.PrivateKey
}

var (
	_ KeySigner = (*keySigner)(nil)
	_ KeySigner = nkeys.KeyPair(nil)
)

func (k *keySigner) PublicKey() (string, error) { return k.pub, nil }

func (k *keySigner) Sign(input []byte) ([]byte, error) { return ed25519.Sign(k.priv, input), nil }
