package envelope_test

import (
	"bytes"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/envelope"
	"github.com/unibus/membership/internal/msgpacktest"
)

// bombs declare the largest length or count their header can hold and carry
// nothing after it: one for every length-prefixed msgpack type.
var bombs = msgpacktest.Bombs()

// maxAlloc is what decoding a crafted input of at most 64 bytes may
// allocate in all.
const maxAlloc = 64 << 10

// allocated returns the bytes f allocates on the heap, averaged over runs.
// Tests that use it must not run in parallel with others.
func allocated(runs int, f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < runs; i++ {
		f()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / uint64(runs)
}

// TestAllocatedDetects shows that [allocated] sees what a bomb costs when
// nothing guards the decoder, so the bounds asserted below mean something.
func TestAllocatedDetects(t *testing.T) {
	tests := []struct {
		in   []byte
		into func() any
	}{
		// Only 1 MiB is declared: msgpack/v5.4.1 really allocates what a
		// bin32 header claims, and c6 ff ff ff ff would cost 4 GiB here.
		{[]byte{0xc6, 0x00, 0x10, 0x00, 0x00}, func() any { return new([]byte) }},
		{[]byte{0xdc, 0xff, 0xff}, func() any { return new([]string) }},
	}
	for _, tt := range tests {
		n := allocated(5, func() { _ = msgpack.Unmarshal(tt.in, tt.into()) })
		if n < maxAlloc {
			t.Fatalf("unguarded msgpack.Unmarshal(%x) allocated %d bytes: the detector cannot tell a guarded decode from an unguarded one", tt.in, n)
		}
		t.Logf("unguarded msgpack.Unmarshal(%x) allocates %d bytes", tt.in, n)
	}
}

// TestBombs feeds every bomb to Check, Unmarshal and Decode: as the whole
// input, as the value of a field of an otherwise valid map, as the value of
// an envelope field, and as an envelope body decoded into an API struct.
// Each must fail with ErrMalformed without allocating for the declared
// size.
func TestBombs(t *testing.T) {
	e := signed(t)
	for _, bomb := range bombs {
		inputs := []struct {
			name string
			in   []byte
			run  func([]byte) error
		}{
			{"whole/Check", bomb.Hdr, envelope.Check},
			{"whole/Unmarshal any", bomb.Hdr, func(b []byte) error { var v any; return envelope.Unmarshal(b, &v) }},
			{"whole/Decode", bomb.Hdr, func(b []byte) error { _, err := envelope.Decode(b); return err }},
			{"nested/Check", mpMap(kv("a", []byte{0x01}), kv("b", bomb.Hdr)), envelope.Check},
			{"nested/Unmarshal map", mpMap(kv("a", []byte{0x01}), kv("b", bomb.Hdr)), func(b []byte) error {
				var v map[string]any
				return envelope.Unmarshal(b, &v)
			}},
			{"nested deep/Unmarshal any", []byte(string([]byte{0x91, 0x91, 0x81, 0xa1, 'k', 0x92, 0xc0}) + string(bomb.Hdr)), func(b []byte) error {
				var v any
				return envelope.Unmarshal(b, &v)
			}},
			{"envelope last field/Decode", mpMap(replace(envFields(e), "nonce", bomb.Hdr)[:3]...), decode},
			{"envelope middle field/Decode", mpMap(replace(envFields(e), "nonce", bomb.Hdr)...), decode},
			{"envelope body/Unmarshal CreateRoomRequest", mpMap(kv("id", mpStr("r1")), kv("members", bomb.Hdr)), func(b []byte) error {
				var v api.CreateRoomRequest
				return envelope.Unmarshal(b, &v)
			}},
			{"envelope body/Unmarshal RekeyRequest sealed", mpMap(kv("room", mpStr("r1")), kv("keys", append([]byte{0x91, 0x82, 0xa8, 'e', 'n', 'd', 'p', 'o', 'i', 'n', 't', 0xa1, 'x', 0xa6, 's', 'e', 'a', 'l', 'e', 'd'}, bomb.Hdr...))), func(b []byte) error {
				var v api.RekeyRequest
				return envelope.Unmarshal(b, &v)
			}},
		}
		for _, in := range inputs {
			t.Run(bomb.Name+"/"+in.name, func(t *testing.T) {
				if limit := 64 + 256*bool2int(strings.Contains(in.name, "middle")); len(in.in) > limit {
					t.Fatalf("crafted input is %d bytes, want at most %d", len(in.in), limit)
				}
				if err := in.run(in.in); !errors.Is(err, envelope.ErrMalformed) {
					t.Fatalf("got %v, want ErrMalformed", err)
				}
				if n := allocated(20, func() { _ = in.run(in.in) }); n > maxAlloc {
					t.Fatalf("%d-byte input allocated %d bytes, want at most %d", len(in.in), n, maxAlloc)
				}
			})
		}
	}
	t.Run("body of a verified envelope", func(t *testing.T) {
		// The service decodes the body only after the envelope checks pass:
		// a signed bomb must still be harmless.
		for _, bomb := range bombs {
			e, err := envelopeWithBody(t, mpMap(kv("room", bomb.Hdr)))
			if err != nil {
				t.Fatal(err)
			}
			var req api.RoomRequest
			if err := envelope.Unmarshal(e.Body, &req); !errors.Is(err, envelope.ErrMalformed) {
				t.Fatalf("%s: got %v, want ErrMalformed", bomb.Name, err)
			}
			if n := allocated(20, func() { _ = envelope.Unmarshal(e.Body, &req) }); n > maxAlloc {
				t.Fatalf("%s: allocated %d bytes", bomb.Name, n)
			}
		}
	})
}

func decode(b []byte) error { _, err := envelope.Decode(b); return err }

func bool2int(b bool) int {
	if b {
		return 1
	}
	return 0
}

// envelopeWithBody signs body, encodes, decodes and verifies it, as the
// service does before it decodes the body.
func envelopeWithBody(t *testing.T, body []byte) (*envelope.Envelope, error) {
	t.Helper()
	now := time.UnixMilli(testTS)
	e, err := envelope.Sign(fixedKey(t, nkeys.PrefixByteUser, 0), testSubject, now, seqBytes(0, 24), body)
	if err != nil {
		return nil, err
	}
	return roundTrip(e, testSubject, now)
}

// nest wraps v in n single-element arrays.
func nest(n int, v []byte) []byte {
	return append(bytes.Repeat([]byte{0x91}, n), v...)
}

// nestMaps wraps v in n single-entry maps with key "k".
func nestMaps(n int, v []byte) []byte {
	return append(bytes.Repeat([]byte{0x81, 0xa1, 'k'}, n), v...)
}

func TestCheckRejects(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty input", nil},
		{"nesting MaxDepth+1 arrays", nest(envelope.MaxDepth+1, []byte{0xc0})},
		{"nesting MaxDepth+1 maps", nestMaps(envelope.MaxDepth+1, []byte{0xc0})},
		{"nesting MaxDepth+1 mixed", nest(envelope.MaxDepth/2, nestMaps(envelope.MaxDepth/2, []byte{0x90}))},
		{"deep nesting far beyond MaxDepth", nest(10000, []byte{0xc0})},
		{"map of MaxMapEntries+1 entries", mpMap(manyFields(envelope.MaxMapEntries + 1)...)},
		{"array of MaxArrayLen+1 nils", append([]byte{0xdc, (envelope.MaxArrayLen + 1) >> 8, (envelope.MaxArrayLen + 1) & 0xff}, bytes.Repeat([]byte{0xc0}, envelope.MaxArrayLen+1)...)},
		{"duplicate key fixstr", mpMap(kv("a", []byte{1}), kv("a", []byte{2}))},
		{"duplicate key fixstr and str8", mpMap(kv("a", []byte{1}), field{[]byte{0xd9, 1, 'a'}, []byte{2}})},
		{"duplicate key str16 and str32", mpMap(field{[]byte{0xda, 0, 1, 'a'}, []byte{1}}, field{[]byte{0xdb, 0, 0, 0, 1, 'a'}, []byte{2}})},
		{"duplicate empty key", mpMap(kv("", []byte{1}), kv("", []byte{2}))},
		{"duplicate key in nested map", mpMap(kv("x", mpMap(kv("b", []byte{1}), kv("c", []byte{1}), kv("b", []byte{1}))))},
		{"duplicate key far apart in map16", mpMap(append(append([]field{kv("dup", []byte{1})}, manyFields(20)...), kv("dup", []byte{2}))...)},
		{"int key", mpMap(field{[]byte{0x01}, []byte{1}})},
		{"nil key", mpMap(field{[]byte{0xc0}, []byte{1}})},
		{"bin key", mpMap(field{[]byte{0xc4, 1, 'a'}, []byte{1}})},
		{"array key", mpMap(field{[]byte{0x91, 0xa1, 'a'}, []byte{1}})},
		{"map key", mpMap(field{[]byte{0x80}, []byte{1}})},
		{"invalid UTF-8 key", mpMap(field{[]byte{0xa1, 0xff}, []byte{1}})},
		{"trailing byte", []byte{0xc0, 0xc0}},
		{"trailing bytes after map", append(mpMap(kv("a", []byte{1})), 0, 0)},
		{"reserved 0xc1", []byte{0xc1}},
		{"reserved 0xc1 as map value", mpMap(kv("a", []byte{0xc1}))},
		{"fixext1 d4", []byte{0xd4, 0x01, 0x00}},
		{"fixext2 d5", []byte{0xd5, 0x01, 0x00, 0x00}},
		{"fixext4 d6 (timestamp)", []byte{0xd6, 0xff, 0, 0, 0, 1}},
		{"fixext8 d7", append([]byte{0xd7, 0x01}, make([]byte, 8)...)},
		{"fixext16 d8", append([]byte{0xd8, 0x01}, make([]byte, 16)...)},
		{"ext8 c7", []byte{0xc7, 0x01, 0x01, 0x00}},
		{"ext16 c8", []byte{0xc8, 0x00, 0x01, 0x01, 0x00}},
		{"ext32 c9", []byte{0xc9, 0x00, 0x00, 0x00, 0x01, 0x01, 0x00}},
		{"ext as map value", mpMap(kv("ts", []byte{0xd6, 0xff, 0, 0, 0, 1}))},
		{"invalid UTF-8 fixstr", []byte{0xa2, 0xc3, 0x28}},
		{"invalid UTF-8 str8", []byte{0xd9, 0x01, 0xff}},
		{"UTF-16 surrogate in str", []byte{0xa3, 0xed, 0xa0, 0x80}},
		{"overlong UTF-8 str", []byte{0xa2, 0xc0, 0xaf}},
		{"invalid UTF-8 str in array", []byte{0x92, 0xa1, 'a', 0xa1, 0x80}},
		{"truncated fixstr", []byte{0xa3, 'a', 'b'}},
		{"truncated bin8", []byte{0xc4, 0x03, 1, 2}},
		{"truncated str16 length", []byte{0xda, 0x00}},
		{"truncated array32 length", []byte{0xdd, 0x00, 0x00, 0x01}},
		{"truncated uint8", []byte{0xcc}},
		{"truncated uint16", []byte{0xcd, 0x00}},
		{"truncated uint32", []byte{0xce, 0, 0, 0}},
		{"truncated uint64", []byte{0xcf, 0, 0, 0, 0, 0, 0, 0}},
		{"truncated int64", []byte{0xd3, 0, 0, 0, 0, 0, 0, 0}},
		{"truncated float32", []byte{0xca, 0, 0, 0}},
		{"truncated float64", []byte{0xcb, 0, 0, 0, 0, 0, 0, 0}},
		{"array short of elements", []byte{0x93, 0x01, 0x02}},
		{"map short of a value", []byte{0x81, 0xa1, 'a'}},
		{"map32 one entry short", []byte{0xdf, 0, 0, 0, 2, 0xa1, 'a', 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := envelope.Check(tt.in); !errors.Is(err, envelope.ErrMalformed) {
				t.Fatalf("Check(%x) = %v, want ErrMalformed", tt.in, err)
			}
			var v any
			if err := envelope.Unmarshal(tt.in, &v); !errors.Is(err, envelope.ErrMalformed) {
				t.Fatalf("Unmarshal(%x) = %v, want ErrMalformed", tt.in, err)
			}
		})
	}
}

// manyFields returns n distinct fields, to push a map past fixmap.
func manyFields(n int) []field {
	out := make([]field, n)
	for i := range out {
		out[i] = kv(strings.Repeat("k", i+1), []byte{byte(i)})
	}
	return out
}

// TestCheckAccepts guards against a scanner so strict it refuses the
// protocol's own messages.
func TestCheckAccepts(t *testing.T) {
	e := signed(t)
	env, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   []byte
	}{
		{"envelope", env},
		{"nil", []byte{0xc0}},
		{"bools", []byte{0x92, 0xc2, 0xc3}},
		{"fixints", []byte{0x92, 0x7f, 0xe0}},
		{"every number width", []byte{0x9a,
			0xcc, 1, 0xcd, 0, 1, 0xce, 0, 0, 0, 1, 0xcf, 0, 0, 0, 0, 0, 0, 0, 1,
			0xd0, 0xff, 0xd1, 0xff, 0xff, 0xd2, 0xff, 0xff, 0xff, 0xff, 0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
			0xca, 0x3f, 0x80, 0, 0, 0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0}},
		{"empty containers", []byte{0x94, 0x90, 0x80, 0xa0, 0xc4, 0x00}},
		{"bin of every width", []byte{0x93, 0xc4, 1, 0xff, 0xc5, 0, 1, 0xff, 0xc6, 0, 0, 0, 1, 0xff}},
		{"str of every width", []byte{0x94, 0xa1, 'a', 0xd9, 1, 'a', 0xda, 0, 1, 'a', 0xdb, 0, 0, 0, 1, 'a'}},
		{"multi-byte UTF-8", mpStr("größe ☃ 🦀")},
		{"array16 and map16", []byte{0x92, 0xdc, 0, 1, 0xc0, 0xde, 0, 1, 0xa1, 'a', 0xc0}},
		{"array32 and map32", []byte{0x92, 0xdd, 0, 0, 0, 1, 0xc0, 0xdf, 0, 0, 0, 1, 0xa1, 'a', 0xc0}},
		{"nesting exactly MaxDepth arrays", nest(envelope.MaxDepth, []byte{0xc0})},
		{"nesting exactly MaxDepth maps", nestMaps(envelope.MaxDepth, []byte{0x01})},
		{"nesting exactly MaxDepth ending in empty array", nest(envelope.MaxDepth-1, []byte{0x90})},
		{"same key in sibling maps", []byte{0x92, 0x81, 0xa1, 'a', 1, 0x81, 0xa1, 'a', 2}},
		{"keys that share a prefix", mpMap(kv("a", []byte{1}), kv("aa", []byte{1}), kv("", []byte{1}))},
		{"key equal to a value", mpMap(kv("a", mpStr("b")), kv("b", mpStr("a")))},
		{"map16 of MaxMapEntries distinct keys", mpMap(manyFields(envelope.MaxMapEntries)...)},
		{"bin with invalid UTF-8", []byte{0xc4, 2, 0xff, 0xfe}},
		{"room request", mpMap(kv("room", mpStr("ops")))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := envelope.Check(tt.in); err != nil {
				t.Fatalf("Check(%x) = %v", tt.in, err)
			}
			var v any
			if err := envelope.Unmarshal(tt.in, &v); err != nil {
				t.Fatalf("Unmarshal(%x) = %v", tt.in, err)
			}
		})
	}
}

// TestUnmarshalTyped covers what only the typed decode can see.
func TestUnmarshalTyped(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		into func() any
		ok   bool
	}{
		{"room request", mpMap(kv("room", mpStr("ops"))), func() any { return new(api.RoomRequest) }, true},
		{"unknown field", mpMap(kv("room", mpStr("ops")), kv("admin", []byte{0xc3})), func() any { return new(api.RoomRequest) }, false},
		{"unknown field in nested struct", mpMap(kv("room", mpStr("r")), kv("member", mpMap(kv("endpoint", mpStr("e")), kv("extra", []byte{1})))), func() any { return new(api.AddMemberRequest) }, false},
		{"unknown field in slice element", mpMap(kv("keys", []byte{0x91, 0x81, 0xa1, 'x', 0x01})), func() any { return new(api.RekeyRequest) }, false},
		{"string where int expected", mpMap(kv("limit", mpStr("10"))), func() any { return new(api.PageRequest) }, false},
		{"map where string expected", mpMap(kv("room", []byte{0x80})), func() any { return new(api.RoomRequest) }, false},
		{"array where struct slice expected holds ints", mpMap(kv("members", []byte{0x91, 0x01})), func() any { return new(api.CreateRoomRequest) }, false},
		{"bool where uint expected", mpMap(kv("epoch", []byte{0xc3})), func() any { return new(api.KeyRequest) }, false},
		{"empty struct", []byte{0x80}, func() any { return new(api.Empty) }, true},
		{"field into empty struct", mpMap(kv("x", []byte{1})), func() any { return new(api.Empty) }, false},
		{"ts as string in envelope", mpMap(kv("ts", mpStr("1764000000000"))), func() any { return new(envelope.Envelope) }, false},
		{"unknown envelope field", mpMap(kv("v", []byte{1}), kv("aad", mpBin([]byte{1}))), func() any { return new(envelope.Envelope) }, false},
		// Defect 2 of issue 11: the array form of a struct, decoded by
		// position, is refused at the top and inside.
		{"array form of a struct", []byte{0x91, 0xa3, 'o', 'p', 's'}, func() any { return new(api.RoomRequest) }, false},
		{"array form of a nested struct", mpMap(kv("room", mpStr("r")), kv("member", []byte{0x92, 0xa1, 'e', 0xc4, 1, 1})), func() any { return new(api.AddMemberRequest) }, false},
		// Defect 3: a negative value for an unsigned field is refused,
		// whatever its width; values that do not fit likewise.
		{"negative fixint for uint", mpMap(kv("epoch", []byte{0xff})), func() any { return new(api.KeyRequest) }, false},
		{"negative int64 for uint", mpMap(kv("epoch", []byte{0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})), func() any { return new(api.KeyRequest) }, false},
		{"uint64 max for uint", mpMap(kv("epoch", []byte{0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})), func() any { return new(api.KeyRequest) }, true},
		{"uint64 above int64 for int", mpMap(kv("limit", []byte{0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0})), func() any { return new(api.PageRequest) }, false},
		{"negative int for int", mpMap(kv("limit", []byte{0xd0, 0x80})), func() any { return new(api.PageRequest) }, true},
		{"float for int", mpMap(kv("limit", []byte{0xca, 0, 0, 0, 0})), func() any { return new(api.PageRequest) }, false},
		// Defect 4: str and bin are not interchangeable, in either direction.
		{"bin for str", mpMap(kv("room", mpBin([]byte("ops")))), func() any { return new(api.RoomRequest) }, false},
		{"str for bin", mpMap(kv("endpoint", mpStr("e")), kv("sealed", mpStr("abc"))), func() any { return new(api.SealedKey) }, false},
		{"bin for bin", mpMap(kv("endpoint", mpStr("e")), kv("sealed", mpBin([]byte{0xff}))), func() any { return new(api.SealedKey) }, true},
		{"int for bool", mpMap(kv("admin", []byte{0x01})), func() any { return new(api.RegisterRequest) }, false},
		{"str for bool", mpMap(kv("admin", mpStr("true"))), func() any { return new(api.RegisterRequest) }, false},
		{"map for array", mpMap(kv("keys", []byte{0x80})), func() any { return new(api.RekeyRequest) }, false},
		{"str for array", mpMap(kv("keys", mpStr("k"))), func() any { return new(api.RekeyRequest) }, false},
		// nil means the zero value for every field type, as an absent key.
		{"nil for every field", mpMap(kv("room", []byte{0xc0}), kv("epoch", []byte{0xc0}), kv("sealer", []byte{0xc0}), kv("keys", []byte{0xc0})), func() any { return new(api.RekeyRequest) }, true},
		{"nil for bool and nested struct", mpMap(kv("admin", []byte{0xc0}), kv("endpoint", []byte{0xc0})), func() any { return new(api.RegisterRequest) }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := envelope.Unmarshal(tt.in, tt.into())
			if tt.ok {
				if err != nil {
					t.Fatalf("Unmarshal(%x) = %v", tt.in, err)
				}
				return
			}
			if !errors.Is(err, envelope.ErrMalformed) {
				t.Fatalf("Unmarshal(%x) = %v, want ErrMalformed", tt.in, err)
			}
		})
	}
}
