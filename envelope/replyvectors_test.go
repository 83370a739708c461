package envelope_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"os"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/subjects"
)

const replyVectorsFile = "testdata/replies.json"

// replyVectorFile is the layout of testdata/replies.json: signed replies
// in both binding forms and key-rotation statements (docs/protocol.md §16).
type replyVectorFile struct {
	Comment   []string         `json:"comment"`
	Replies   []replyVector    `json:"replies"`
	Rotations []rotationVector `json:"rotations"`
}

type replyVector struct {
	Name         string `json:"name"`
	ServiceKey   string `json:"service_key"`
	Binding      string `json:"binding"`     // nonce | request
	RequestHex   string `json:"request_hex"` // the request as sent
	BindingHex   string `json:"binding_hex"` // the nonce, or SHA-256 of the request
	Code         int    `json:"code"`
	Reason       string `json:"reason"`
	BodyHex      string `json:"body_hex"`
	CanonicalHex string `json:"canonical_hex"`
	Sig          string `json:"sig"` // unpadded base64url, as in Unibus-Reply-Sig
	Expect       string `json:"expect"`
}

type rotationVector struct {
	Name         string `json:"name"`
	OldKey       string `json:"old_key"`
	NewKey       string `json:"new_key"`
	CanonicalHex string `json:"canonical_hex"`
	Sig          string `json:"sig"` // key_rotation_sig
	Expect       string `json:"expect"`
}

// serverSeed is the test server key whose raw seed is the bytes from, from+1, …
func serverSeed(t *testing.T, from byte) nkeys.KeyPair {
	t.Helper()
	raw := make([]byte, 32)
	for i := range raw {
		raw[i] = from + byte(i)
	}
	seed, err := nkeys.EncodeSeed(nkeys.PrefixByteServer, raw)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func generateReplyVectors(t *testing.T) []byte {
	t.Helper()
	old, next := serverSeed(t, 1), serverSeed(t, 0x21)
	oldPub, nextPub := publicKey(t, old), publicKey(t, next)
	nonce := seqBytes(0, 24)
	// A request with a 24-byte nonce in a version-2 envelope: refused, but
	// its nonce was read; and one that is not msgpack at all.
	withNonce := append([]byte{0x82, 0xa1, 'v', 0x02, 0xa5, 'n', 'o', 'n', 'c', 'e', 0xc4, 24}, nonce...)
	garbage := []byte("not an envelope")
	sign := func(kp nkeys.KeyPair, b []byte) string {
		sig, err := kp.Sign(b)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(sig)
	}
	reply := func(name, binding string, request, bind []byte, code int, reason string, body []byte, signer nkeys.KeyPair, expect string) replyVector {
		c := api.ReplyCanonical(bind, code, reason, body)
		if binding == "request" {
			c = api.ReplyToRequestCanonical(request, code, reason, body)
		}
		return replyVector{Name: name, ServiceKey: oldPub, Binding: binding, RequestHex: hex.EncodeToString(request),
			BindingHex: hex.EncodeToString(bind), Code: code, Reason: reason, BodyHex: hex.EncodeToString(body),
			CanonicalHex: hex.EncodeToString(c), Sig: sign(signer, c), Expect: expect}
	}
	sum := sha256.Sum256(garbage)
	rot := api.RotationCanonical(oldPub, nextPub)
	f := replyVectorFile{
		Comment: []string{
			"Signed replies and key-rotation statements of docs/protocol.md §16. Test keys only: never use them.",
			"service_key is the server key whose raw seed is 01 02 … 20; the rotation's new key has raw seed 21 22 … 40.",
			"binding nonce: the request's nonce (label unibus-membership-reply-v1); binding request: SHA-256 of request_hex (label unibus-membership-reply-to-request-v1).",
			"expect: ok (sig verifies under service_key / old_key for canonical_hex) | bad_signature.",
		},
		Replies: []replyVector{
			reply("nonce success", "nonce", withNonce, nonce, 200, "", []byte{0x81, 0xa4, 'r', 'o', 'o', 'm', 0xa2, 'r', '1'}, old, "ok"),
			reply("nonce error of a request refused in step 1", "nonce", withNonce, nonce, 400, "invalid", nil, old, "ok"),
			reply("request hash, nothing decoded", "request", garbage, sum[:], 400, "invalid", nil, old, "ok"),
			reply("request hash signed by another key", "request", garbage, sum[:], 400, "invalid", nil, next, "bad_signature"),
		},
		Rotations: []rotationVector{
			{Name: "rotation", OldKey: oldPub, NewKey: nextPub, CanonicalHex: hex.EncodeToString(rot), Sig: sign(old, rot), Expect: "ok"},
			{Name: "forged: signed by the new key", OldKey: oldPub, NewKey: nextPub, CanonicalHex: hex.EncodeToString(rot), Sig: sign(next, rot), Expect: "bad_signature"},
		},
	}
	out, err := json.MarshalIndent(&f, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(out, '\n')
}

// TestReplyVectors checks testdata/replies.json against the generator,
// recomputes every canonical form with independent code, and runs each
// vector through the client's verification. -update rewrites the file.
func TestReplyVectors(t *testing.T) {
	want := generateReplyVectors(t)
	if *update {
		if err := os.WriteFile(replyVectorsFile, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(replyVectorsFile)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("%s differs from the generator (%v); if intended, run go test ./envelope -run TestReplyVectors -update", replyVectorsFile, err)
	}
	var f replyVectorFile
	if err := json.Unmarshal(got, &f); err != nil {
		t.Fatal(err)
	}
	for _, v := range f.Replies {
		t.Run(v.Name, func(t *testing.T) { checkReplyVector(t, v) })
	}
	for _, v := range f.Rotations {
		t.Run(v.Name, func(t *testing.T) {
			field := func(b []byte, s string) []byte { return append(binary.BigEndian.AppendUint32(b, uint32(len(s))), s...) }
			c := field(field(field(nil, api.RotationLabel), v.OldKey), v.NewKey)
			if hex.EncodeToString(c) != v.CanonicalHex {
				t.Fatalf("canonical %x, vector %s", c, v.CanonicalHex)
			}
			sig, _ := base64.RawURLEncoding.DecodeString(v.Sig)
			meta := map[string]string{api.MetaServiceKey: v.NewKey, api.MetaPreviousKey: v.OldKey, api.MetaRotationSig: v.Sig}
			ok := ed25519.Verify(rawPublic(t, v.OldKey), c, sig)
			if ok != (v.Expect == "ok") || (client.VerifyRotation(v.OldKey, meta) == nil) != ok {
				t.Fatalf("verifies %v, client %v, want %s", ok, client.VerifyRotation(v.OldKey, meta), v.Expect)
			}
		})
	}
}

func checkReplyVector(t *testing.T, v replyVector) {
	t.Helper()
	dec := func(s string) []byte {
		b, err := hex.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	label := api.ReplyLabel
	if v.Binding == "request" {
		label = api.ReplyRequestLabel
		if sum := sha256.Sum256(dec(v.RequestHex)); hex.EncodeToString(sum[:]) != v.BindingHex {
			t.Fatalf("binding is not SHA-256 of the request")
		}
	}
	field := func(b, f []byte) []byte { return append(binary.BigEndian.AppendUint32(b, uint32(len(f))), f...) }
	sum := sha256.Sum256(dec(v.BodyHex))
	c := field(field(nil, []byte(label)), dec(v.BindingHex))
	c = binary.BigEndian.AppendUint32(c, uint32(v.Code))
	c = field(field(c, []byte(v.Reason)), sum[:])
	if hex.EncodeToString(c) != v.CanonicalHex {
		t.Fatalf("canonical %x, vector %s", c, v.CanonicalHex)
	}
	sig, _ := base64.RawURLEncoding.DecodeString(v.Sig)
	ok := ed25519.Verify(rawPublic(t, v.ServiceKey), c, sig)
	msg := &nats.Msg{Data: dec(v.BodyHex), Header: nats.Header{}}
	msg.Header.Set(subjects.HeaderReplySig, v.Sig)
	if v.Code != 200 {
		msg.Header.Set(micro.ErrorCodeHeader, strconv.Itoa(v.Code))
		msg.Header.Set(subjects.HeaderReason, v.Reason)
	}
	kp, _ := nkeys.FromPublicKey(v.ServiceKey)
	byClient := client.VerifyReplyTo(kp, dec(v.RequestHex), msg) == nil
	if ok != (v.Expect == "ok") || byClient != ok {
		t.Fatalf("verifies %v, client %v, want %s", ok, byClient, v.Expect)
	}
}

func rawPublic(t *testing.T, key string) ed25519.PublicKey {
	t.Helper()
	raw, err := nkeys.Decode(nkeys.PrefixByteServer, []byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
