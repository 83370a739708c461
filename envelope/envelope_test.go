package envelope_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/envelope"
)

const (
	testSubject = "unibus.membership.v1.room.get"
	testTS      = int64(1764000000000)
	skew        = 30 * time.Second
)

var testBody = []byte{0x81, 0xa4, 'r', 'o', 'o', 'm', 0xa3, 'o', 'p', 's'} // {"room":"ops"}

// signed returns an envelope for testBody signed by the fixed user key.
func signed(t testing.TB) *envelope.Envelope {
	t.Helper()
	e, err := envelope.Sign(fixedKey(t, nkeys.PrefixByteUser, 0), testSubject, time.UnixMilli(testTS), seqBytes(0, 24), testBody)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return e
}

// roundTrip is what a receiver does: encode, decode strictly, verify.
func roundTrip(e *envelope.Envelope, subject string, now time.Time) (*envelope.Envelope, error) {
	b, err := e.Marshal()
	if err != nil {
		return nil, err
	}
	d, err := envelope.Decode(b)
	if err != nil {
		return nil, err
	}
	return d, d.Verify(subject, now, skew)
}

func equalEnvelopes(a, b *envelope.Envelope) bool {
	return a.Version == b.Version && a.TS == b.TS && a.Signer == b.Signer &&
		bytes.Equal(a.Nonce, b.Nonce) && bytes.Equal(a.BodyHash, b.BodyHash) &&
		bytes.Equal(a.Sig, b.Sig) && bytes.Equal(a.Body, b.Body)
}

func TestRoundTrip(t *testing.T) {
	user := fixedKey(t, nkeys.PrefixByteUser, 0)
	now := time.UnixMilli(testTS)
	tests := []struct {
		name  string
		nonce []byte
		body  []byte
	}{
		{"typical", seqBytes(0, 24), testBody},
		{"min nonce", seqBytes(0, envelope.MinNonce), testBody},
		{"max nonce", seqBytes(0, envelope.MaxNonce), testBody},
		{"empty body", seqBytes(0, 24), nil},
		{"large body", seqBytes(0, 24), bytes.Repeat([]byte{0xc0}, 70000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := envelope.Sign(user, testSubject, now, tt.nonce, tt.body)
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			if e.Version != envelope.Version || e.TS != testTS || e.Signer != publicKey(t, user) {
				t.Fatalf("Sign set v=%d ts=%d signer=%s", e.Version, e.TS, e.Signer)
			}
			if sum := sha256.Sum256(tt.body); !bytes.Equal(e.BodyHash, sum[:]) {
				t.Fatalf("body_hash = %x, want sha256(body) %x", e.BodyHash, sum)
			}
			d, err := roundTrip(e, testSubject, now)
			if err != nil {
				t.Fatalf("round trip: %v", err)
			}
			if !equalEnvelopes(e, d) {
				t.Fatalf("decoded %+v, want %+v", d, e)
			}
		})
	}
	t.Run("New", func(t *testing.T) {
		a, err := envelope.New(user, testSubject, testBody)
		if err != nil {
			t.Fatal(err)
		}
		b, err := envelope.New(user, testSubject, testBody)
		if err != nil {
			t.Fatal(err)
		}
		if len(a.Nonce) != envelope.NonceSize || bytes.Equal(a.Nonce, b.Nonce) {
			t.Fatalf("New nonces %x and %x: want two distinct %d-byte nonces", a.Nonce, b.Nonce, envelope.NonceSize)
		}
		if _, err := roundTrip(a, testSubject, time.Now()); err != nil {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// TestVerifyRejects changes one thing about a signed envelope and expects
// the sentinel of the check that must catch it, whether that is Decode or
// Verify.
func TestVerifyRejects(t *testing.T) {
	now := time.UnixMilli(testTS)
	ms := time.Millisecond
	other := fixedKey(t, nkeys.PrefixByteUser, 1)
	keyOf := func(p nkeys.PrefixByte) string { return publicKey(t, fixedKey(t, p, 0)) }
	tests := []struct {
		name    string
		mutate  func(e *envelope.Envelope)
		subject string        // "" means testSubject
		now     time.Duration // offset of the receiver's clock from ts
		want    error         // nil means accepted
	}{
		{name: "unchanged"},
		{name: "receiver clock at -skew edge", now: skew},
		{name: "receiver clock at +skew edge", now: -skew},
		{name: "wrong subject", subject: "unibus.membership.v1.room.key", want: envelope.ErrSignature},
		{name: "subject with extra token", subject: testSubject + ".x", want: envelope.ErrSignature},
		{name: "ts older than skew", now: skew + ms, want: envelope.ErrStale},
		{name: "ts newer than skew", now: -skew - ms, want: envelope.ErrStale},
		{name: "ts far past", now: 100 * 365 * 24 * time.Hour, want: envelope.ErrStale},
		{name: "ts changed after signing", mutate: func(e *envelope.Envelope) { e.TS++ }, want: envelope.ErrSignature},
		{name: "body changed", mutate: func(e *envelope.Envelope) { e.Body = append(bytes.Clone(e.Body), 0) }, want: envelope.ErrBodyHash},
		{name: "body removed", mutate: func(e *envelope.Envelope) { e.Body = nil }, want: envelope.ErrBodyHash},
		{name: "body and body_hash changed", mutate: func(e *envelope.Envelope) {
			e.Body = []byte{0x80}
			sum := sha256.Sum256(e.Body)
			e.BodyHash = sum[:]
		}, want: envelope.ErrSignature},
		{name: "nonce changed", mutate: func(e *envelope.Envelope) { e.Nonce[0] ^= 1 }, want: envelope.ErrSignature},
		{name: "sig first bit flipped", mutate: func(e *envelope.Envelope) { e.Sig[0] ^= 0x80 }, want: envelope.ErrSignature},
		{name: "sig last bit flipped", mutate: func(e *envelope.Envelope) { e.Sig[63] ^= 1 }, want: envelope.ErrSignature},
		{name: "signer another user key", mutate: func(e *envelope.Envelope) { e.Signer = publicKey(t, other) }, want: envelope.ErrSignature},
		{name: "signer account key", mutate: func(e *envelope.Envelope) { e.Signer = keyOf(nkeys.PrefixByteAccount) }, want: envelope.ErrField},
		{name: "signer curve key", mutate: func(e *envelope.Envelope) { e.Signer = keyOf(nkeys.PrefixByteCurve) }, want: envelope.ErrField},
		{name: "signer server key", mutate: func(e *envelope.Envelope) { e.Signer = keyOf(nkeys.PrefixByteServer) }, want: envelope.ErrField},
		{name: "signer operator key", mutate: func(e *envelope.Envelope) { e.Signer = keyOf(nkeys.PrefixByteOperator) }, want: envelope.ErrField},
		{name: "signer cluster key", mutate: func(e *envelope.Envelope) { e.Signer = keyOf(nkeys.PrefixByteCluster) }, want: envelope.ErrField},
		{name: "signer user key with bad checksum", mutate: func(e *envelope.Envelope) {
			s := []byte(e.Signer)
			s[len(s)-1] = map[bool]byte{true: 'A', false: 'B'}[s[len(s)-1] != 'A']
			e.Signer = string(s)
		}, want: envelope.ErrField},
		{name: "signer lower case", mutate: func(e *envelope.Envelope) { e.Signer = strings.ToLower(e.Signer) }, want: envelope.ErrField},
		{name: "signer empty", mutate: func(e *envelope.Envelope) { e.Signer = "" }, want: envelope.ErrField},
		{name: "nonce 15 bytes", mutate: func(e *envelope.Envelope) { e.Nonce = e.Nonce[:15] }, want: envelope.ErrField},
		{name: "nonce 65 bytes", mutate: func(e *envelope.Envelope) { e.Nonce = seqBytes(0, 65) }, want: envelope.ErrField},
		{name: "nonce empty", mutate: func(e *envelope.Envelope) { e.Nonce = nil }, want: envelope.ErrField},
		{name: "version 0", mutate: func(e *envelope.Envelope) { e.Version = 0 }, want: envelope.ErrVersion},
		{name: "version 2", mutate: func(e *envelope.Envelope) { e.Version = 2 }, want: envelope.ErrVersion},
		{name: "version 255", mutate: func(e *envelope.Envelope) { e.Version = 255 }, want: envelope.ErrVersion},
		{name: "body_hash 31 bytes", mutate: func(e *envelope.Envelope) { e.BodyHash = e.BodyHash[:31] }, want: envelope.ErrField},
		{name: "body_hash 33 bytes", mutate: func(e *envelope.Envelope) { e.BodyHash = append(e.BodyHash, 0) }, want: envelope.ErrField},
		{name: "body_hash empty", mutate: func(e *envelope.Envelope) { e.BodyHash = nil }, want: envelope.ErrField},
		{name: "sig 63 bytes", mutate: func(e *envelope.Envelope) { e.Sig = e.Sig[:63] }, want: envelope.ErrField},
		{name: "sig 65 bytes", mutate: func(e *envelope.Envelope) { e.Sig = append(e.Sig, 0) }, want: envelope.ErrField},
		{name: "sig empty", mutate: func(e *envelope.Envelope) { e.Sig = nil }, want: envelope.ErrUnsigned},
		{name: "ts zero", mutate: func(e *envelope.Envelope) { e.TS = 0 }, want: envelope.ErrField},
		{name: "ts negative", mutate: func(e *envelope.Envelope) { e.TS = -testTS }, want: envelope.ErrField},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := signed(t)
			if tt.mutate != nil {
				tt.mutate(e)
			}
			subject := tt.subject
			if subject == "" {
				subject = testSubject
			}
			_, err := roundTrip(e, subject, now.Add(tt.now))
			switch {
			case tt.want == nil && err != nil:
				t.Fatalf("rejected: %v", err)
			case tt.want != nil && !errors.Is(err, tt.want):
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

// TestVerifySignerType calls Verify on envelopes that never went through
// Decode: a valid signature by a key that is not a user key must still be
// refused, because nkeys.FromPublicKey accepts every key type.
func TestVerifySignerType(t *testing.T) {
	now := time.UnixMilli(testTS)
	for _, p := range []nkeys.PrefixByte{
		nkeys.PrefixByteAccount, nkeys.PrefixByteServer, nkeys.PrefixByteOperator,
		nkeys.PrefixByteCluster, nkeys.PrefixByteCurve, nkeys.PrefixByteUser,
	} {
		t.Run(p.String(), func(t *testing.T) {
			kp := fixedKey(t, p, 0) // an Ed25519 key pair whatever its prefix: it can sign
			sum := sha256.Sum256(testBody)
			e := &envelope.Envelope{Version: envelope.Version, TS: testTS, Nonce: seqBytes(0, 24),
				Signer: publicKey(t, kp), BodyHash: sum[:], Body: testBody}
			var err error
			if e.Sig, err = kp.Sign(e.Canonical(testSubject)); err != nil {
				t.Fatal(err)
			}
			err = e.Verify(testSubject, now, skew)
			if p == nkeys.PrefixByteUser {
				if err != nil {
					t.Fatalf("user key rejected: %v", err)
				}
				return
			}
			if !errors.Is(err, envelope.ErrField) {
				t.Fatalf("Verify = %v, want ErrField", err)
			}
			if err := e.CheckSignature(testSubject); !errors.Is(err, envelope.ErrField) {
				t.Fatalf("CheckSignature = %v, want ErrField", err)
			}
		})
	}
}

func TestSignRejects(t *testing.T) {
	ts := time.UnixMilli(testTS)
	curve, err := nkeys.CreateCurveKeys()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		kp    nkeys.KeyPair
		nonce []byte
		want  error
	}{
		{"account key", fixedKey(t, nkeys.PrefixByteAccount, 0), seqBytes(0, 24), envelope.ErrField},
		{"server key", fixedKey(t, nkeys.PrefixByteServer, 0), seqBytes(0, 24), envelope.ErrField},
		{"curve key", curve, seqBytes(0, 24), envelope.ErrField},
		{"nonce 15", fixedKey(t, nkeys.PrefixByteUser, 0), seqBytes(0, 15), envelope.ErrField},
		{"nonce 65", fixedKey(t, nkeys.PrefixByteUser, 0), seqBytes(0, 65), envelope.ErrField},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := envelope.Sign(tt.kp, testSubject, ts, tt.nonce, testBody)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Sign = %v, %v; want %v", e, err, tt.want)
			}
		})
	}
	t.Run("nonce is copied", func(t *testing.T) {
		nonce := seqBytes(0, 24)
		e, err := envelope.Sign(fixedKey(t, nkeys.PrefixByteUser, 0), testSubject, ts, nonce, testBody)
		if err != nil {
			t.Fatal(err)
		}
		nonce[0] ^= 0xff
		if err := e.Verify(testSubject, ts, skew); err != nil {
			t.Fatalf("changing the caller's nonce slice broke the envelope: %v", err)
		}
	})
}

// TestDecodeStrictForm covers encodings of a valid envelope that the
// library would decode into the same struct but the protocol does not
// allow.
func TestDecodeStrictForm(t *testing.T) {
	e := signed(t)
	good := envFields(e)
	arr := []byte{0x97}
	for _, f := range good {
		arr = append(arr, f.val...)
	}
	tests := []struct {
		name string
		in   []byte
		want error // nil means accepted
	}{
		{"hand-encoded map", mpMap(good...), nil},
		{"fields in another order", mpMap(good[6], good[5], good[4], good[3], good[2], good[1], good[0]), nil},
		{"v as uint16 257", mpMap(replace(good, "v", []byte{0xcd, 0x01, 0x01})...), envelope.ErrVersion},
		{"v as uint64 2^32+1", mpMap(replace(good, "v", []byte{0xcf, 0, 0, 0, 1, 0, 0, 0, 1})...), envelope.ErrVersion},
		{"v as int8 1", mpMap(replace(good, "v", []byte{0xd0, 0x01})...), nil},                      // another width, the same value
		{"v as negative fixint", mpMap(replace(good, "v", []byte{0xff})...), envelope.ErrMalformed}, // v is unsigned: never wrapped
		{"v missing", mpMap(good[1:]...), envelope.ErrVersion},
		{"v as string", mpMap(replace(good, "v", mpStr("1"))...), envelope.ErrMalformed},
		{"v as float", mpMap(replace(good, "v", []byte{0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0})...), envelope.ErrMalformed},
		{"ts as string", mpMap(replace(good, "ts", mpStr("1764000000000"))...), envelope.ErrMalformed},
		{"ts as float", mpMap(replace(good, "ts", []byte{0xcb, 0x42, 0x79, 0xab, 0x3a, 0x1c, 0xe0, 0, 0})...), envelope.ErrMalformed},
		{"ts as uint64 above int64", mpMap(replace(good, "ts", []byte{0xcf, 0x80, 0, 0, 0, 0, 0, 0, 1})...), envelope.ErrMalformed}, // does not fit: never wrapped
		// str and bin are not interchangeable (docs/protocol.md §4, §6).
		{"nonce as str", mpMap(replace(good, "nonce", mpStr("0123456789abcdef01234567"))...), envelope.ErrMalformed},
		{"signer as bin", mpMap(replace(good, "signer", mpBin([]byte(e.Signer)))...), envelope.ErrMalformed},
		{"body as str", mpMap(replace(good, "body", mpStr(string(e.Body)))...), envelope.ErrMalformed},
		{"sig as str", mpMap(replace(good, "sig", mpStr("x"))...), envelope.ErrMalformed},
		{"nonce as int", mpMap(replace(good, "nonce", []byte{0x01})...), envelope.ErrMalformed},
		{"unknown field", mpMap(append(good, kv("extra", []byte{0xc0}))...), envelope.ErrMalformed},
		{"duplicate field", mpMap(append(good, good[1])...), envelope.ErrMalformed},
		{"trailing byte", append(mpMap(good...), 0xc0), envelope.ErrMalformed},
		{"array instead of map", arr, envelope.ErrMalformed},
		{"nil", []byte{0xc0}, envelope.ErrMalformed},
		{"empty", nil, envelope.ErrUnsigned},
		{"sig missing", mpMap(good[:5]...), envelope.ErrUnsigned},
		{"sig missing, version 2", mpMap(replace(good[:5], "v", []byte{0x02})...), envelope.ErrUnsigned},
		{"sig empty bin", mpMap(replace(good, "sig", []byte{0xc4, 0x00})...), envelope.ErrUnsigned},
		{"sig nil", mpMap(replace(good, "sig", []byte{0xc0})...), envelope.ErrUnsigned},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := envelope.Decode(tt.in)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if !equalEnvelopes(d, e) {
					t.Fatalf("decoded %+v, want %+v", d, e)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Decode = %+v, %v; want %v", d, err, tt.want)
			}
		})
	}
}

func TestCheckTime(t *testing.T) {
	e := &envelope.Envelope{TS: testTS}
	base := time.UnixMilli(testTS)
	tests := []struct {
		name string
		now  time.Time
		skew time.Duration
		ok   bool
	}{
		{"same instant", base, skew, true},
		{"now at ts+skew", base.Add(skew), skew, true},
		{"now at ts-skew", base.Add(-skew), skew, true},
		{"now 1ns after ts+skew", base.Add(skew + 1), skew, false},
		{"now 1ns before ts-skew", base.Add(-skew - 1), skew, false},
		{"zero skew, same instant", base, 0, true},
		{"zero skew, 1ms off", base.Add(time.Millisecond), 0, false},
		{"now is the zero time", time.Time{}, skew, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := e.CheckTime(tt.now, tt.skew)
			if tt.ok != (err == nil) || (err != nil && !errors.Is(err, envelope.ErrStale)) {
				t.Fatalf("CheckTime = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestCanonicalExact(t *testing.T) {
	signer := publicKey(t, fixedKey(t, nkeys.PrefixByteUser, 0))
	hash := seqBytes(0xa0, 32)
	got := envelope.Canonical("a.b", 0x0102030405060708, seqBytes(0, 16), signer, hash)
	want := "0000001c" + hex.EncodeToString([]byte("unibus-membership-request-v1")) +
		"00000003" + "612e62" +
		"0102030405060708" +
		"00000010" + "000102030405060708090a0b0c0d0e0f" +
		"00000038" + hex.EncodeToString([]byte(signer)) +
		"00000020" + "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
	if hex.EncodeToString(got) != want {
		t.Fatalf("Canonical =\n%x\nwant\n%s", got, want)
	}
	if envelope.Label != "unibus-membership-request-v1" {
		t.Fatalf("Label changed to %q: that breaks every signature", envelope.Label)
	}
	e := &envelope.Envelope{TS: 0x0102030405060708, Nonce: seqBytes(0, 16), Signer: signer, BodyHash: hash}
	if !bytes.Equal(e.Canonical("a.b"), got) {
		t.Fatalf("Envelope.Canonical differs from Canonical")
	}
	if d := e.Digest("a.b"); d != sha256.Sum256(got) {
		t.Fatalf("Digest = %x, want sha256(canonical)", d)
	}
	t.Run("negative ts is two's complement", func(t *testing.T) {
		c := envelope.Canonical("", -2, nil, "", nil)
		if want := "0000001c" + hex.EncodeToString([]byte(envelope.Label)) + "00000000" + "fffffffffffffffe" + "00000000" + "00000000" + "00000000"; hex.EncodeToString(c) != want {
			t.Fatalf("got %x, want %s", c, want)
		}
	})
}

// TestCanonicalDistinct checks that moving bytes across a field boundary
// changes the canonical bytes: no two tuples may share a signature.
func TestCanonicalDistinct(t *testing.T) {
	type tuple struct {
		subject string
		ts      int64
		nonce   []byte
		signer  string
		hash    []byte
	}
	base := tuple{"a.b", 1, []byte("nnnnnnnnnnnnnnnn"), "Usigner", seqBytes(0, 32)}
	tests := []struct {
		name string
		a, b tuple
	}{
		{"subject tail moves into nonce", base,
			tuple{"a.", 1, []byte("bnnnnnnnnnnnnnnnn"), "Usigner", seqBytes(0, 32)}},
		{"nonce tail moves into signer", base,
			tuple{"a.b", 1, []byte("nnnnnnnnnnnnnnn"), "nUsigner", seqBytes(0, 32)}},
		{"signer tail moves into hash", base,
			tuple{"a.b", 1, []byte("nnnnnnnnnnnnnnnn"), "Usigne", append([]byte("r"), seqBytes(0, 32)...)}},
		{"subject vs ts bytes", tuple{"a.b\x00", 1, nil, "", nil},
			tuple{"a.b", 0x0000000000000000, []byte{0, 0, 0, 0, 0, 0, 0, 1}, "", nil}},
		{"empty subject vs empty nonce", tuple{"", 1, []byte("x"), "", nil},
			tuple{"x", 1, nil, "", nil}},
		{"ts differs", base, tuple{"a.b", 2, base.nonce, base.signer, base.hash}},
		{"subject differs", base, tuple{"a.c", 1, base.nonce, base.signer, base.hash}},
		{"hash differs", base, tuple{"a.b", 1, base.nonce, base.signer, seqBytes(1, 32)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := envelope.Canonical(tt.a.subject, tt.a.ts, tt.a.nonce, tt.a.signer, tt.a.hash)
			b := envelope.Canonical(tt.b.subject, tt.b.ts, tt.b.nonce, tt.b.signer, tt.b.hash)
			if bytes.Equal(a, b) {
				t.Fatalf("two tuples share canonical bytes %x", a)
			}
		})
	}
}

// TestKeySignerMatchesNkeys: the signer that keeps the derived key signs
// exactly as nkeys does, for user and server keys, and refuses a key pair
// without a seed.
func TestKeySignerMatchesNkeys(t *testing.T) {
	for _, create := range []func() (nkeys.KeyPair, error){nkeys.CreateUser, nkeys.CreateServer} {
		kp, err := create()
		if err != nil {
			t.Fatal(err)
		}
		ks, err := envelope.NewKeySigner(kp)
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := kp.PublicKey()
		if got, _ := ks.PublicKey(); got != pub {
			t.Fatalf("public key %s, want %s", got, pub)
		}
		for _, msg := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte{7}, 1000)} {
			want, _ := kp.Sign(msg)
			got, _ := ks.Sign(msg)
			if !bytes.Equal(got, want) {
				t.Fatalf("signature of %d bytes differs from nkeys'", len(msg))
			}
			if err := kp.Verify(msg, got); err != nil {
				t.Fatal(err)
			}
		}
	}
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	pubOnly, _ := nkeys.FromPublicKey(pub)
	if _, err := envelope.NewKeySigner(pubOnly); err == nil {
		t.Fatal("a public-only key pair gave a signer")
	}
}

// TestCheckSeen: Check calls seen with the digest only after the cheap
// checks passed, returns seen's error before verifying the signature, and
// otherwise answers like Verify.
func TestCheckSeen(t *testing.T) {
	now := time.UnixMilli(testTS)
	refused := errors.New("seen")
	tests := []struct {
		name     string
		mutate   func(e *envelope.Envelope)
		now      time.Time
		seenErr  error
		want     error
		wantSeen bool
	}{
		{name: "accepted", now: now, wantSeen: true},
		{name: "seen refuses", now: now, seenErr: refused, want: refused, wantSeen: true},
		{name: "seen refuses before the signature", mutate: func(e *envelope.Envelope) { e.Sig[0] ^= 1 }, now: now, seenErr: refused, want: refused, wantSeen: true},
		{name: "bad signature after seen", mutate: func(e *envelope.Envelope) { e.Sig[0] ^= 1 }, now: now, want: envelope.ErrSignature, wantSeen: true},
		{name: "stale: seen not asked", now: now.Add(skew + time.Millisecond), seenErr: refused, want: envelope.ErrStale},
		{name: "body hash: seen not asked", mutate: func(e *envelope.Envelope) { e.Body = nil }, now: now, seenErr: refused, want: envelope.ErrBodyHash},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := signed(t)
			if tt.mutate != nil {
				tt.mutate(e)
			}
			var seen [][32]byte
			digest, err := e.Check(testSubject, tt.now, skew, func(d [32]byte) error {
				seen = append(seen, d)
				return tt.seenErr
			})
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Check = %v, want %v", err, tt.want)
			}
			if (len(seen) == 1) != tt.wantSeen || len(seen) > 1 {
				t.Fatalf("seen called %d times, want it called: %v", len(seen), tt.wantSeen)
			}
			if tt.wantSeen && (seen[0] != e.Digest(testSubject) || digest != seen[0]) {
				t.Fatalf("seen got %x and Check returned %x, want the digest %x", seen[0], digest, e.Digest(testSubject))
			}
		})
	}
}
