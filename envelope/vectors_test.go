package envelope_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nkeys"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/envelope"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json from the generator")

const vectorsFile = "testdata/vectors.json"

// vectorFile is the layout of testdata/vectors.json.
type vectorFile struct {
	Comment []string `json:"comment"`
	Label   string   `json:"label"`
	Vectors []vector `json:"vectors"`
}

// vector is one language-neutral test vector. seed … sig_hex describe what
// the signer signed; envelope_hex is what is on the wire, which a vector may
// have altered after signing (description says how). A verifier decodes
// envelope_hex and checks it for check_subject at check_now_ms with skew_ms.
type vector struct {
	Name         string `json:"name"`
	Description  string `json:"description"`
	Seed         string `json:"seed"`
	Signer       string `json:"signer"`
	Subject      string `json:"subject"`
	TS           int64  `json:"ts"`
	NonceHex     string `json:"nonce_hex"`
	BodyHex      string `json:"body_hex"`
	BodyHashHex  string `json:"body_hash_hex"`
	CanonicalHex string `json:"canonical_hex"`
	SigHex       string `json:"sig_hex"`
	EnvelopeHex  string `json:"envelope_hex"`
	CheckSubject string `json:"check_subject"`
	CheckNowMS   int64  `json:"check_now_ms"`
	SkewMS       int64  `json:"skew_ms"`
	Expect       string `json:"expect"`
}

// Outcomes a vector may expect.
const (
	expectOK           = "ok"
	expectBadSignature = "bad_signature"
	expectWrongSubject = "wrong_subject"
	expectStale        = "stale"
	expectBadBodyHash  = "bad_body_hash"
	expectMalformed    = "malformed"
)

// generateVectors computes every vector from fixed inputs. It is
// deterministic: Ed25519 signatures are, and nothing here is random.
func generateVectors(t *testing.T) []byte {
	t.Helper()
	const (
		subject = "unibus.membership.v1.room.get"
		ts      = int64(1764000000000)
		skewMS  = int64(30000)
	)
	body, err := msgpack.Marshal(&api.RoomRequest{Room: "ops"})
	if err != nil {
		t.Fatal(err)
	}
	otherBody, err := msgpack.Marshal(&api.RoomRequest{Room: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	nonce := seqBytes(0, 24)

	// base signs body with kp and returns the vector fields and the
	// envelope fields, before any alteration.
	base := func(kp nkeys.KeyPair, nonce []byte) (vector, *envelope.Envelope) {
		seed, err := kp.Seed()
		if err != nil {
			t.Fatal(err)
		}
		signer := publicKey(t, kp)
		sum := sha256.Sum256(body)
		e := &envelope.Envelope{Version: envelope.Version, TS: ts, Nonce: nonce, Signer: signer, BodyHash: sum[:], Body: body}
		canonical := e.Canonical(subject)
		if e.Sig, err = kp.Sign(canonical); err != nil {
			t.Fatal(err)
		}
		wire, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return vector{
			Seed: string(seed), Signer: signer, Subject: subject, TS: ts,
			NonceHex: hex.EncodeToString(nonce), BodyHex: hex.EncodeToString(body),
			BodyHashHex: hex.EncodeToString(sum[:]), CanonicalHex: hex.EncodeToString(canonical),
			SigHex: hex.EncodeToString(e.Sig), EnvelopeHex: hex.EncodeToString(wire),
			CheckSubject: subject, CheckNowMS: ts, SkewMS: skewMS, Expect: expectOK,
		}, e
	}
	user := fixedKey(t, nkeys.PrefixByteUser, 0)
	ok, e := base(user, nonce)
	fields := envFields(e)
	flipped := bytes.Clone(e.Sig)
	flipped[63] ^= 0x01

	var vs []vector
	add := func(name, desc string, change func(v *vector)) {
		v := ok
		v.Name, v.Description = name, desc
		change(&v)
		vs = append(vs, v)
	}
	wire := func(v *vector, b []byte) { v.EnvelopeHex = hex.EncodeToString(b) }

	add("ok", "A valid request checked at its own ts.", func(v *vector) {})
	add("ok_skew_edge_past", "Checked exactly skew_ms after ts: still accepted (the window is inclusive).",
		func(v *vector) { v.CheckNowMS = ts + skewMS })
	add("ok_skew_edge_future", "Checked exactly skew_ms before ts: still accepted.",
		func(v *vector) { v.CheckNowMS = ts - skewMS })
	add("ok_key_order_and_int_width", "The same envelope with its keys in reverse order, v as a positive fixint and ts as uint64 (0xcf): key order and integer width are free.",
		func(v *vector) {
			f := replace(replace(fields, "ts", append([]byte{0xcf}, bytes.Clone(mpInt(ts)[1:])...)), "v", []byte{0x01})
			wire(v, mpMap(f[6], f[5], f[4], f[3], f[2], f[1], f[0]))
		})
	add("wrong_subject", "Signed for room.get, received on room.members: the subject is part of the signed bytes.",
		func(v *vector) { v.CheckSubject = "unibus.membership.v1.room.members"; v.Expect = expectWrongSubject })
	add("stale_past", "Checked skew_ms+1 ms after ts.",
		func(v *vector) { v.CheckNowMS = ts + skewMS + 1; v.Expect = expectStale })
	add("stale_future", "Checked skew_ms+1 ms before ts (the client clock runs ahead).",
		func(v *vector) { v.CheckNowMS = ts - skewMS - 1; v.Expect = expectStale })
	add("bad_body_hash", "The envelope carries another body ({\"room\":\"dev\"}) with the original body_hash and sig; body_hex is the signed body.",
		func(v *vector) {
			wire(v, mpMap(replace(fields, "body", mpBin(otherBody))...))
			v.Expect = expectBadBodyHash
		})
	add("bad_signature", "The last bit of the signature is flipped in the envelope; sig_hex is the genuine signature.",
		func(v *vector) {
			wire(v, mpMap(replace(fields, "sig", mpBin(flipped))...))
			v.Expect = expectBadSignature
		})
	add("bad_signature_other_signer", "The envelope names another valid user key as signer.",
		func(v *vector) {
			wire(v, mpMap(replace(fields, "signer", mpStr(publicKey(t, fixedKey(t, nkeys.PrefixByteUser, 1))))...))
			v.Expect = expectBadSignature
		})
	add("malformed_bomb_array32", "A bare array32 header claiming 2^32-1 elements: reject without allocating.",
		func(v *vector) { wire(v, []byte{0xdd, 0xff, 0xff, 0xff, 0xff}); v.Expect = expectMalformed })
	add("malformed_nested_bomb_bin32", "The envelope with body replaced by a bin32 header claiming 2^32-1 bytes and nothing after it.",
		func(v *vector) {
			wire(v, mpMap(replace(fields, "body", []byte{0xc6, 0xff, 0xff, 0xff, 0xff})...))
			v.Expect = expectMalformed
		})
	add("malformed_trailing_byte", "The valid envelope followed by one byte (0xc0).",
		func(v *vector) { wire(v, append(mpMap(fields...), 0xc0)); v.Expect = expectMalformed })
	add("malformed_duplicate_key", "The valid envelope with ts repeated (8 entries).",
		func(v *vector) { wire(v, mpMap(append(fields, fields[1])...)); v.Expect = expectMalformed })
	add("malformed_unknown_key", "The valid envelope with an extra key \"x\": nil.",
		func(v *vector) { wire(v, mpMap(append(fields, kv("x", []byte{0xc0}))...)); v.Expect = expectMalformed })
	add("malformed_version_2", "v = 2.",
		func(v *vector) { wire(v, mpMap(replace(fields, "v", []byte{0x02})...)); v.Expect = expectMalformed })
	add("malformed_version_257", "v = 257 as uint16 (0xcd 0x01 0x01): must not be truncated to 1.",
		func(v *vector) {
			wire(v, mpMap(replace(fields, "v", []byte{0xcd, 0x01, 0x01})...))
			v.Expect = expectMalformed
		})
	add("malformed_array_form", "The seven field values as a msgpack array instead of a map.",
		func(v *vector) {
			b := []byte{0x97}
			for _, f := range fields {
				b = append(b, f.val...)
			}
			wire(v, b)
			v.Expect = expectMalformed
		})
	short, _ := base(user, seqBytes(0, 15))
	short.Name, short.Description, short.Expect = "malformed_nonce_15", "A correctly signed envelope whose nonce is 15 bytes (minimum 16).", expectMalformed
	vs = append(vs, short)
	acct, _ := base(fixedKey(t, nkeys.PrefixByteAccount, 0), nonce)
	acct.Name, acct.Description, acct.Expect = "malformed_signer_account_key", "Correctly signed by an nkeys account key (A…): only user keys (U…) may sign.", expectMalformed
	vs = append(vs, acct)

	out, err := json.MarshalIndent(vectorFile{
		Comment: []string{
			"Test vectors for the unibus membership request envelope; see docs/protocol.md.",
			"Generated by envelope/vectors_test.go (go test ./envelope -run TestVectors -update). Do not edit.",
			"The seeds are public test keys: never use them for anything else.",
			"seed..sig_hex describe what was signed; envelope_hex is what is received (a vector may alter it after signing).",
			"Decode envelope_hex strictly, then check ts against check_now_ms within skew_ms, then sha256(body) against body_hash, then the Ed25519 signature over the canonical bytes for check_subject.",
			"expect: ok | stale | bad_body_hash | bad_signature | wrong_subject (a bad signature because the subject differs) | malformed (rejected by decoding).",
		},
		Label:   envelope.Label,
		Vectors: vs,
	}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(out, '\n')
}

// TestVectors checks testdata/vectors.json against the generator, checks
// each vector's internal consistency with independent code, and runs each
// through Decode and Verify. With -update it rewrites the file first.
func TestVectors(t *testing.T) {
	want := generateVectors(t)
	if *update {
		if err := os.WriteFile(vectorsFile, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatalf("%v (generate it with go test ./envelope -run TestVectors -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from the generator; if the change is intended, run go test ./envelope -run TestVectors -update", vectorsFile)
	}
	var file vectorFile
	dec := json.NewDecoder(bytes.NewReader(got))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&file); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, v := range file.Vectors {
		seen[v.Expect] = true
		t.Run(v.Name, func(t *testing.T) { checkVector(t, v) })
	}
	for _, e := range []string{expectOK, expectBadSignature, expectWrongSubject, expectStale, expectBadBodyHash, expectMalformed} {
		if !seen[e] {
			t.Errorf("no vector expects %q", e)
		}
	}
}

func checkVector(t *testing.T, v vector) {
	hexOf := func(s string) []byte {
		b, err := hex.DecodeString(s)
		if err != nil {
			t.Fatalf("bad hex %q: %v", s, err)
		}
		return b
	}
	// Consistency, computed without the envelope package where possible.
	kp, err := nkeys.FromSeed([]byte(v.Seed))
	if err != nil {
		t.Fatal(err)
	}
	if pub := publicKey(t, kp); pub != v.Signer {
		t.Fatalf("seed gives signer %s, vector says %s", pub, v.Signer)
	}
	body, hash, canonical, sig := hexOf(v.BodyHex), hexOf(v.BodyHashHex), hexOf(v.CanonicalHex), hexOf(v.SigHex)
	if sum := sha256.Sum256(body); !bytes.Equal(sum[:], hash) {
		t.Fatalf("body_hash_hex is not sha256(body_hex)")
	}
	if c := envelope.Canonical(v.Subject, v.TS, hexOf(v.NonceHex), v.Signer, hash); !bytes.Equal(c, canonical) {
		t.Fatalf("canonical_hex differs from Canonical: %x", c)
	}
	if s, err := kp.Sign(canonical); err != nil || !bytes.Equal(s, sig) {
		t.Fatalf("sig_hex is not the (deterministic) signature of canonical_hex: %x %v", s, err)
	}
	pubRaw, err := nkeys.Decode(nkeys.PrefixByte(prefixOf(v.Signer)), []byte(v.Signer))
	if err != nil {
		t.Fatal(err)
	}
	if !ed25519.Verify(ed25519.PublicKey(pubRaw), canonical, sig) {
		t.Fatalf("sig_hex does not verify with crypto/ed25519")
	}

	// The outcome.
	got := outcome(hexOf(v.EnvelopeHex), v.CheckSubject, time.UnixMilli(v.CheckNowMS), time.Duration(v.SkewMS)*time.Millisecond)
	want := v.Expect
	if want == expectWrongSubject {
		want = expectBadSignature
		if o := outcome(hexOf(v.EnvelopeHex), v.Subject, time.UnixMilli(v.CheckNowMS), time.Duration(v.SkewMS)*time.Millisecond); o != expectOK {
			t.Fatalf("wrong_subject vector is not ok for its own subject: %s", o)
		}
	}
	if got != want {
		t.Fatalf("outcome %s, want %s", got, want)
	}
}

func prefixOf(pub string) nkeys.PrefixByte {
	switch pub[0] {
	case 'U':
		return nkeys.PrefixByteUser
	case 'A':
		return nkeys.PrefixByteAccount
	}
	return nkeys.PrefixByteUnknown
}

// outcome runs the receiver's checks and names the result as vectors do.
func outcome(wire []byte, subject string, now time.Time, skew time.Duration) string {
	e, err := envelope.Decode(wire)
	if err != nil {
		return expectMalformed
	}
	err = e.Verify(subject, now, skew)
	switch {
	case err == nil:
		return expectOK
	case errors.Is(err, envelope.ErrStale):
		return expectStale
	case errors.Is(err, envelope.ErrBodyHash):
		return expectBadBodyHash
	case errors.Is(err, envelope.ErrSignature):
		return expectBadSignature
	}
	return "unexpected: " + err.Error()
}
