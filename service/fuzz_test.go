package service

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nats-io/nkeys"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/envelope"
	"github.com/unibus/membership/internal/msgpacktest"
)

// requestTypes are the body types of every operation, in registration
// order (taken from the protocol's operation table, so a new operation is
// fuzzed without editing this file).
func requestTypes() []reflect.Type {
	var out []reflect.Type
	for _, o := range api.Ops {
		out = append(out, reflect.TypeOf(o.Request))
	}
	return out
}

// bodySeeds are valid bodies of every operation plus hostile variants.
func bodySeeds(tb testing.TB) [][]byte {
	enc := func(v any) []byte {
		b, err := msgpack.Marshal(v)
		if err != nil {
			tb.Fatal(err)
		}
		return b
	}
	seeds := [][]byte{
		enc(api.RegisterRequest{Endpoint: "alice", SignKey: "UABC", XKey: "XABC", Admin: true}),
		enc(api.EndpointRequest{Endpoint: "alice"}),
		enc(api.PageRequest{After: "a", Limit: 10}),
		enc(api.Empty{}),
		enc(api.CreateRoomRequest{ID: "r1", Subject: "chat.r1", Sealer: "X", Members: []api.SealedKey{{Endpoint: "a", Sealed: []byte{1}}}}),
		enc(api.RoomRequest{Room: "r1"}),
		enc(api.MembersRequest{Room: "r1", After: "a", Limit: 5}),
		enc(api.KeyRequest{Room: "r1", Epoch: 2}),
		enc(api.AddMemberRequest{Room: "r1", Epoch: 1, Sealer: "X", Member: api.SealedKey{Endpoint: "b", Sealed: []byte{2}}}),
		enc(api.RemoveMemberRequest{Room: "r1", Endpoint: "b"}),
		enc(api.RekeyRequest{Room: "r1", Epoch: 2, Sealer: "X", Keys: []api.SealedKey{{Endpoint: "a", Sealed: []byte{3}}}}),
		enc(api.AuditRequest{Room: "r1", After: 3, Limit: 2}),
		enc(map[string]any{"room": "r1", "unknown": 1}),                                  // unknown field
		{0x82, 0xa4, 'r', 'o', 'o', 'm', 0xa1, 'a', 0xa4, 'r', 'o', 'o', 'm', 0xa1, 'b'}, // duplicate key
		append(enc(api.RoomRequest{Room: "r1"}), 0xc0),                                   // trailing byte
		enc(map[string]any{"room": 5}),                                                   // wrong type
		enc(map[string]any{"epoch": -1}),                                                 // negative into unsigned
		{0x81, 0xa4, 'r', 'o', 'o', 'm', 0xa2, 0xff, 0xfe},                               // invalid UTF-8
	}
	deep := []byte{}
	for range 40 {
		deep = append(deep, 0x91)
	}
	seeds = append(seeds, append(deep, 0xc0))
	for _, b := range msgpacktest.Bombs() {
		seeds = append(seeds, b.Hdr)
		seeds = append(seeds, append([]byte{0x81, 0xa4, 'k', 'e', 'y', 's'}, b.Hdr...))
		seeds = append(seeds, append([]byte{0x81, 0xa6, 'm', 'e', 'm', 'b', 'e', 'r'}, b.Hdr...))
	}
	return seeds
}

// FuzzBodies decodes arbitrary bytes strictly into the body type of every
// operation, as the service does. It must never panic, fail only with
// envelope.ErrMalformed, and whatever it accepts must re-encode to bytes
// that decode to the same value (no field silently dropped or changed).
func FuzzBodies(f *testing.F) {
	types := requestTypes()
	for _, s := range bodySeeds(f) {
		for i := range types {
			f.Add(uint8(i), s)
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		typ := types[int(which)%len(types)]
		v := reflect.New(typ)
		if err := envelope.Unmarshal(data, v.Interface()); err != nil {
			if !errors.Is(err, envelope.ErrMalformed) {
				t.Fatalf("%s: Unmarshal(%x) = %v, want ErrMalformed", typ, data, err)
			}
			return
		}
		b1, err := msgpack.Marshal(v.Interface())
		if err != nil {
			t.Fatalf("%s: re-encode: %v", typ, err)
		}
		v2 := reflect.New(typ)
		if err := envelope.Unmarshal(b1, v2.Interface()); err != nil {
			t.Fatalf("%s: the re-encoding %x of accepted %x is refused: %v", typ, b1, data, err)
		}
		b2, err := msgpack.Marshal(v2.Interface())
		if err != nil || !bytes.Equal(b1, b2) {
			t.Fatalf("%s: encoding not stable: %x vs %x (%v)", typ, b1, b2, err)
		}
		checkValidators(t, v.Elem())
	})
}

// checkValidators runs the validations the operations apply to a decoded
// body's fields; they must not panic whatever the field holds, and what
// they accept must meet the rules stated for them.
func checkValidators(t *testing.T, v reflect.Value) {
	for i := 0; i < v.NumField(); i++ {
		switch f := v.Field(i).Interface().(type) {
		case string:
			checkString(t, f)
		case api.SealedKey:
			checkSealed(t, f)
		case []api.SealedKey:
			if _, err := sealedSet(f); err == nil {
				for _, k := range f {
					checkSealed(t, k)
				}
			}
		}
	}
}

func checkString(t *testing.T, s string) {
	if api.ValidateID("id", s) == nil {
		if s == "" || len(s) > api.MaxIDLen || strings.ContainsAny(s, ".*> \t\r\n") {
			t.Fatalf("ValidateID accepted %q", s)
		}
		// An id is exactly one KV key token.
		if k := keyMember("room", s); strings.Count(k, ".") != 2 {
			t.Fatalf("id %q makes member key %q with extra tokens", s, k)
		}
	}
	if api.ValidateRoomSubject(s) == nil {
		if len(s) > 255 || !utf8.ValidString(s) || strings.ContainsAny(s, " \t\r\n\x00") {
			t.Fatalf("ValidateRoomSubject accepted %q", s)
		}
		for _, tok := range strings.Split(s, ".") {
			if tok == "" || strings.ContainsAny(tok, "*>") {
				t.Fatalf("ValidateRoomSubject accepted %q (token %q)", s, tok)
			}
		}
	}
	if api.ValidateSigningKey(s) == nil {
		if _, err := nkeys.FromPublicKey(s); err != nil || s[0] != 'U' {
			t.Fatalf("ValidateSigningKey accepted %q", s)
		}
	}
	if api.ValidateXKey("x", s) == nil {
		if _, err := nkeys.FromPublicKey(s); err != nil || s[0] != 'X' {
			t.Fatalf("ValidateXKey accepted %q", s)
		}
	}
}

func checkSealed(t *testing.T, k api.SealedKey) {
	if api.ValidateSealed(k) == nil {
		if len(k.Sealed) == 0 || len(k.Sealed) > api.MaxSealedKey || api.ValidateID("e", k.Endpoint) != nil {
			t.Fatalf("ValidateSealed accepted %+v", k)
		}
	}
}

// FuzzValidate feeds arbitrary strings and bytes straight to the id,
// subject, key and sealed-key validation.
func FuzzValidate(f *testing.F) {
	for _, s := range []string{"alice", "a.b", "a b", "", strings.Repeat("x", 65), "chat.r1", "chat.*", "chat.>", "a..b",
		".a", "a.", "é", "\xff", "chat.r1\x00", "UAAAA", "XAAAA", "-_-", "a\tb"} {
		f.Add(s, []byte(s))
	}
	u, _ := nkeys.CreateUser()
	up, _ := u.PublicKey()
	x, _ := nkeys.CreateCurveKeys()
	xp, _ := x.PublicKey()
	f.Add(up, []byte{1})
	f.Add(xp, make([]byte, api.MaxSealedKey+1))
	f.Fuzz(func(t *testing.T, s string, sealed []byte) {
		checkString(t, s)
		checkSealed(t, api.SealedKey{Endpoint: s, Sealed: sealed})
	})
}

// FuzzCanonical: distinct request field tuples never give the same
// canonical bytes, so no signature covers two requests.
func FuzzCanonical(f *testing.F) {
	h := sha256.Sum256(nil)
	f.Add("a.b", int64(1), []byte("nonce-nonce-nonce"), "Usigner", h[:], "a.b", int64(1), []byte("nonce-nonce-nonce"), "Usigner", h[:])
	f.Add("a.b", int64(1), []byte("ab"), "c", h[:], "a.ba", int64(1), []byte("b"), "c", h[:])
	f.Add("", int64(0), []byte{}, "", []byte{}, "", int64(0), []byte{0, 0, 0, 0}, "", []byte{})
	f.Fuzz(func(t *testing.T, s1 string, ts1 int64, n1 []byte, g1 string, h1 []byte, s2 string, ts2 int64, n2 []byte, g2 string, h2 []byte) {
		same := s1 == s2 && ts1 == ts2 && bytes.Equal(n1, n2) && g1 == g2 && bytes.Equal(h1, h2)
		c1 := envelope.Canonical(s1, ts1, n1, g1, h1)
		c2 := envelope.Canonical(s2, ts2, n2, g2, h2)
		if same != bytes.Equal(c1, c2) {
			t.Fatalf("tuples equal %v but canonical bytes equal %v", same, !same)
		}
	})
}

// FuzzReplyCanonical: distinct (nonce, code, reason, body) give distinct
// signed bytes (up to a SHA-256 collision of the bodies). Codes are fuzzed
// as 16-bit values: the wire form is u32 and the service only signs codes
// from its own table.
func FuzzReplyCanonical(f *testing.F) {
	f.Add([]byte("nonce"), uint16(200), "", []byte("body"), []byte("nonce"), uint16(200), "", []byte("body"))
	f.Add([]byte("n"), uint16(401), "replay", []byte{}, []byte("n"), uint16(401), "replay", []byte{0})
	f.Add([]byte("ab"), uint16(0), "c", []byte{}, []byte("a"), uint16(0), "bc", []byte{})
	f.Fuzz(func(t *testing.T, n1 []byte, c1 uint16, r1 string, b1 []byte, n2 []byte, c2 uint16, r2 string, b2 []byte) {
		same := bytes.Equal(n1, n2) && c1 == c2 && r1 == r2 && bytes.Equal(b1, b2)
		x1 := api.ReplyCanonical(n1, int(c1), r1, b1)
		x2 := api.ReplyCanonical(n2, int(c2), r2, b2)
		if same != bytes.Equal(x1, x2) {
			t.Fatalf("replies equal %v but canonical bytes equal %v", same, !same)
		}
	})
}

// FuzzAuditCanonical: distinct audit entries hash differently.
func FuzzAuditCanonical(f *testing.F) {
	f.Add("room.r1", uint64(1), "room.add", "alice", "bob", uint64(1), int64(5), []byte{0},
		"room.r1", uint64(1), "room.add", "alice", "bob", uint64(1), int64(5), []byte{0})
	f.Add("room.r1", uint64(1), "room.add", "alic", "ebob", uint64(1), int64(5), []byte{},
		"room.r1", uint64(1), "room.add", "alice", "bob", uint64(1), int64(5), []byte{})
	f.Fuzz(func(t *testing.T, ch1 string, seq1 uint64, op1, actor1, target1 string, ep1 uint64, tm1 int64, prev1 []byte,
		ch2 string, seq2 uint64, op2, actor2, target2 string, ep2 uint64, tm2 int64, prev2 []byte) {
		e1 := api.AuditEntry{Chain: ch1, Seq: seq1, Op: op1, Actor: actor1, Target: target1, Epoch: ep1, Time: tm1, Prev: prev1}
		e2 := api.AuditEntry{Chain: ch2, Seq: seq2, Op: op2, Actor: actor2, Target: target2, Epoch: ep2, Time: tm2, Prev: prev2}
		same := ch1 == ch2 && seq1 == seq2 && op1 == op2 && actor1 == actor2 && target1 == target2 && ep1 == ep2 && tm1 == tm2 && bytes.Equal(prev1, prev2)
		if same != bytes.Equal(e1.AuditCanonical(), e2.AuditCanonical()) {
			t.Fatalf("entries equal %v but canonical bytes equal %v", same, !same)
		}
	})
}

// TestBodyBombsBoundedMemory decodes 64-byte inputs that declare 2^32−1
// elements or bytes into every operation's body type: each is refused as
// malformed, allocating a few kilobytes at most (msgpack/v5.4 would try to
// allocate gigabytes and kill the process; envelope/doc.go, docs/security.md).
func TestBodyBombsBoundedMemory(t *testing.T) {
	for _, typ := range requestTypes() {
		for _, b := range msgpacktest.Bombs() {
			for _, prefix := range [][]byte{nil, {0x81, 0xa4, 'k', 'e', 'y', 's'}, {0x81, 0xa7, 'm', 'e', 'm', 'b', 'e', 'r', 's'}} {
				in := append(append(append([]byte{}, prefix...), b.Hdr...), make([]byte, 64)...)[:64]
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				err := envelope.Unmarshal(in, reflect.New(typ).Interface())
				runtime.ReadMemStats(&after)
				if !errors.Is(err, envelope.ErrMalformed) {
					t.Fatalf("%s ← %x: %v, want ErrMalformed", typ, in, err)
				}
				if d := after.TotalAlloc - before.TotalAlloc; d > 64<<10 {
					t.Fatalf("%s ← %x allocated %d bytes", typ, in, d)
				}
			}
		}
	}
}
