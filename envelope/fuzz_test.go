package envelope_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

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
		f.Add(b.hdr)
		f.Add(mpMap(replace(envFields(e), "nonce", b.hdr)...))
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
		f.Add(b.hdr)
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
