package envelope_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/envelope"
)

// rawSeed is the fixed 32-byte Ed25519 seed of the test vectors' keys.
// TEST KEY: public in this repository, never use it for anything else.
var rawSeed = func() []byte {
	b := make([]byte, 32)
	for i := range b {
		b[i] = byte(0x40 + i)
	}
	return b
}()

// fixedKey derives a deterministic key pair of the given type from rawSeed
// (the last byte varied by n, so that two keys of one type differ).
func fixedKey(t testing.TB, prefix nkeys.PrefixByte, n byte) nkeys.KeyPair {
	t.Helper()
	seed := bytes.Clone(rawSeed)
	seed[31] ^= n
	kp, err := nkeys.FromRawSeed(prefix, seed)
	if err != nil {
		t.Fatalf("FromRawSeed(%v): %v", prefix, err)
	}
	return kp
}

func publicKey(t testing.TB, kp nkeys.KeyPair) string {
	t.Helper()
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// seqBytes returns n bytes counting up from start.
func seqBytes(start byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

// unhex decodes hex that may contain spaces (for readable fixtures).
func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// Hand-written msgpack, independent of the library under test, so that a
// fixture can hold exactly the bytes a hostile client would send.

func mpStr(s string) []byte {
	switch n := len(s); {
	case n < 32:
		return append([]byte{0xa0 | byte(n)}, s...)
	case n < 1<<8:
		return append([]byte{0xd9, byte(n)}, s...)
	case n < 1<<16:
		return append(binary.BigEndian.AppendUint16([]byte{0xda}, uint16(n)), s...)
	default:
		return append(binary.BigEndian.AppendUint32([]byte{0xdb}, uint32(n)), s...)
	}
}

func mpBin(b []byte) []byte {
	switch n := len(b); {
	case n < 1<<8:
		return append([]byte{0xc4, byte(n)}, b...)
	case n < 1<<16:
		return append(binary.BigEndian.AppendUint16([]byte{0xc5}, uint16(n)), b...)
	default:
		return append(binary.BigEndian.AppendUint32([]byte{0xc6}, uint32(n)), b...)
	}
}

func mpInt(v int64) []byte {
	if v >= 0 && v < 128 {
		return []byte{byte(v)}
	}
	return binary.BigEndian.AppendUint64([]byte{0xd3}, uint64(v))
}

// field is one map entry: a raw key and a raw value, both msgpack.
type field struct{ key, val []byte }

func kv(key string, val []byte) field { return field{mpStr(key), val} }

// mpMap encodes fields as a map in the given order, with a fixmap or map16
// header.
func mpMap(fields ...field) []byte {
	var b []byte
	if len(fields) < 16 {
		b = []byte{0x80 | byte(len(fields))}
	} else {
		b = binary.BigEndian.AppendUint16([]byte{0xde}, uint16(len(fields)))
	}
	for _, f := range fields {
		b = append(b, f.key...)
		b = append(b, f.val...)
	}
	return b
}

// envFields is e as map fields in the order Marshal writes them.
func envFields(e *envelope.Envelope) []field {
	return []field{
		kv("v", mpInt(int64(e.Version))),
		kv("ts", mpInt(e.TS)),
		kv("nonce", mpBin(e.Nonce)),
		kv("signer", mpStr(e.Signer)),
		kv("body_hash", mpBin(e.BodyHash)),
		kv("sig", mpBin(e.Sig)),
		kv("body", mpBin(e.Body)),
	}
}

// replace returns fields with the value of key replaced by val.
func replace(fields []field, key string, val []byte) []field {
	out := make([]field, len(fields))
	copy(out, fields)
	for i, f := range out {
		if bytes.Equal(f.key, mpStr(key)) {
			out[i].val = val
			return out
		}
	}
	panic("no field " + key)
}
