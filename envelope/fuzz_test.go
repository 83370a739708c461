package envelope_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/envelope"
)

// FuzzDecode: Decode never panics, fails only with the package's
// sentinels, and whatever it accepts survives Marshal → Decode unchanged.
// Seeds: testdata/fuzz/FuzzDecode and the ones added here.
func FuzzDecode(f *testing.F) {
	e := signed(f)
	good, err := e.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(mpMap(envFields(e)...))
	for _, b := range bombs {
		f.Add(b.Hdr)
		f.Add(mpMap(replace(envFields(e), "nonce", b.Hdr)...))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := envelope.Decode(data)
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("Decode(%x) = %v: not one of the package's sentinels", data, err)
			}
			return
		}
		b, err := d.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a decoded envelope: %v", err)
		}
		d2, err := envelope.Decode(b)
		if err != nil {
			t.Fatalf("Decode(Marshal(Decode(%x))) = %v", data, err)
		}
		if !equalEnvelopes(d, d2) {
			t.Fatalf("round trip changed the envelope:\n%+v\n%+v", d, d2)
		}
		b2, err := d2.Marshal()
		if err != nil || !bytes.Equal(b, b2) {
			t.Fatalf("Marshal is not stable: %x vs %x (%v)", b, b2, err)
		}
	})
}

func isSentinel(err error) bool {
	for _, s := range []error{envelope.ErrMalformed, envelope.ErrVersion, envelope.ErrField, envelope.ErrUnsigned} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// FuzzCheck: Check never panics, fails only with ErrMalformed, and whatever
// it accepts the msgpack library decodes (into any), re-encodes, and Check
// accepts again.
func FuzzCheck(f *testing.F) {
	good, err := signed(f).Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(nest(envelope.MaxDepth, []byte{0xc0}))
	f.Add(mpMap(manyFields(20)...))
	for _, b := range bombs {
		f.Add(b.Hdr)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := envelope.Check(data); err != nil {
			if !errors.Is(err, envelope.ErrMalformed) {
				t.Fatalf("Check(%x) = %v, want ErrMalformed", data, err)
			}
			return
		}
		var v any
		if err := msgpack.Unmarshal(data, &v); err != nil {
			t.Fatalf("Check accepted %x but msgpack.Unmarshal fails: %v", data, err)
		}
		var strict any
		if err := envelope.Unmarshal(data, &strict); err != nil {
			t.Fatalf("Check accepted %x but Unmarshal fails: %v", data, err)
		}
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatalf("re-encode %#v: %v", v, err)
		}
		if err := envelope.Check(b); err != nil {
			t.Fatalf("Check refuses the re-encoding %x of accepted %x: %v", b, data, err)
		}
	})
}

// bodyTypes are every request and reply type of the protocol.
func bodyTypes() []func() any {
	return []func() any{
		func() any { return new(api.RegisterRequest) }, func() any { return new(api.EndpointRequest) },
		func() any { return new(api.PageRequest) }, func() any { return new(api.Empty) },
		func() any { return new(api.CreateRoomRequest) }, func() any { return new(api.RoomRequest) },
		func() any { return new(api.MembersRequest) }, func() any { return new(api.KeyRequest) },
		func() any { return new(api.AddMemberRequest) }, func() any { return new(api.RemoveMemberRequest) },
		func() any { return new(api.RekeyRequest) }, func() any { return new(api.AuditRequest) },
		func() any { return new(api.IdentityAuditRequest) }, func() any { return new(api.Identity) },
		func() any { return new(api.PublicKeys) }, func() any { return new(api.IdentityPage) },
		func() any { return new(api.Room) }, func() any { return new(api.MembersPage) },
		func() any { return new(api.KeyReply) }, func() any { return new(api.RoomPage) },
		func() any { return new(api.AuditPage) }, func() any { return new(envelope.Envelope) },
	}
}

// FuzzUnmarshalTyped: for every protocol type, Unmarshal never panics,
// fails only with ErrMalformed, and never lets through bytes that the
// msgpack library then refuses: the type check decides every refusal, so
// no library text can reach a caller (issue 11, defect 5).
func FuzzUnmarshalTyped(f *testing.F) {
	for _, mk := range bodyTypes() {
		b, err := msgpack.Marshal(mk())
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(mpMap(kv("epoch", []byte{0xff})))
	f.Add(mpMap(kv("member", []byte{0x92, 0xa1, 'e', 0xc4, 1, 1})))
	f.Add(mpMap(kv("keys", []byte{0x91, 0x82, 0xa8, 'e', 'n', 'd', 'p', 'o', 'i', 'n', 't', 0xa1, 'x', 0xa6, 's', 'e', 'a', 'l', 'e', 'd', 0xc4, 1, 1})))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, mk := range bodyTypes() {
			v := mk()
			err := envelope.Unmarshal(data, v)
			if err == nil {
				continue
			}
			if !errors.Is(err, envelope.ErrMalformed) || strings.Contains(err.Error(), "does not decode as") {
				t.Fatalf("Unmarshal(%x) into %T = %v", data, v, err)
			}
		}
	})
}
