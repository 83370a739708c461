package envelope

import (
	"bytes"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"
)

// Bounds on any protocol message. Count limits matter beside the
// bytes-left check: a one-byte nil decoded into a struct element costs tens
// of bytes, so an unbounded array would still amplify memory.
const (
	MaxDepth      = 8     // nesting of maps and arrays
	MaxArrayLen   = 16384 // elements in one array (a rekey carries up to 10,000 keys)
	MaxMapEntries = 64    // entries in one map (bodies are small structs)
)

// ErrMalformed reports msgpack that is invalid, non-canonical for this
// protocol, or does not match the expected type.
var ErrMalformed = errors.New("malformed msgpack")

// Unmarshal decodes one msgpack value from b into v (a pointer) after
// [Check] accepted the bytes and every value was found to match the type of
// the field it goes into: unknown fields, the array form of a struct, str
// for bin and bin for str, negative values for unsigned fields and values
// that do not fit are refused, each with an error that names the field. It
// is the only decoder of bytes read from the wire, on both sides: requests
// and bodies in the service, replies in the client.
func Unmarshal(b []byte, v any) error {
	if err := Check(b); err != nil {
		return err
	}
	if err := checkInto(b, v); err != nil {
		return err
	}
	dec := msgpack.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields(true)
	if err := dec.Decode(v); err != nil {
		// Not expected after checkInto; the library's text stays out of
		// the error all the same (it would reach callers).
		return malformed("value does not decode as %T", v)
	}
	return nil
}

// Check scans b as exactly one msgpack value without allocating for it. It
// fails on: a declared length or element count larger than the bytes left
// (each element takes at least one byte), nesting deeper than [MaxDepth],
// extension types, the reserved byte 0xc1, strings that are not UTF-8, map
// keys that are not strings or repeat, and bytes after the value.
func Check(b []byte) error {
	end, err := scan(b, 0, 0)
	if err != nil {
		return err
	}
	if end != len(b) {
		return fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(b)-end)
	}
	return nil
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// length reads an n-byte big-endian length at b[i:].
func length(b []byte, i, n int) (int, int, error) {
	if len(b)-i < n {
		return 0, 0, malformed("truncated length at offset %d", i)
	}
	v := 0
	for k := 0; k < n; k++ {
		v = v<<8 | int(b[i+k])
	}
	return v, i + n, nil
}

// scan checks the value starting at b[i] and returns the offset after it.
func scan(b []byte, i, depth int) (int, error) {
	if i >= len(b) {
		return 0, malformed("truncated at offset %d", i)
	}
	c := b[i]
	i++
	switch {
	case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
		return i, nil
	case c >= 0x80 && c <= 0x8f:
		return scanMap(b, i, int(c&0x0f), depth)
	case c >= 0x90 && c <= 0x9f:
		return scanArray(b, i, int(c&0x0f), depth)
	case c >= 0xa0 && c <= 0xbf:
		return scanStr(b, i, int(c&0x1f))
	}
	var n int
	var err error
	switch c {
	case 0xc4, 0xc5, 0xc6: // bin 8/16/32
		if n, i, err = length(b, i, 1<<(c-0xc4)); err != nil {
			return 0, err
		}
		if n > len(b)-i {
			return 0, malformed("bin of %d bytes with %d left", n, len(b)-i)
		}
		return i + n, nil
	case 0xd9, 0xda, 0xdb: // str 8/16/32
		if n, i, err = length(b, i, 1<<(c-0xd9)); err != nil {
			return 0, err
		}
		return scanStr(b, i, n)
	case 0xdc, 0xdd: // array 16/32
		if n, i, err = length(b, i, 2<<(c-0xdc)); err != nil {
			return 0, err
		}
		return scanArray(b, i, n, depth)
	case 0xde, 0xdf: // map 16/32
		if n, i, err = length(b, i, 2<<(c-0xde)); err != nil {
			return 0, err
		}
		return scanMap(b, i, n, depth)
	case 0xcc, 0xd0:
		return fixed(b, i, 1)
	case 0xcd, 0xd1:
		return fixed(b, i, 2)
	case 0xce, 0xd2, 0xca:
		return fixed(b, i, 4)
	case 0xcf, 0xd3, 0xcb:
		return fixed(b, i, 8)
	case 0xc1:
		return 0, malformed("reserved byte 0xc1 at offset %d", i-1)
	default: // 0xc7–0xc9, 0xd4–0xd8: extensions
		return 0, malformed("extension type 0x%02x at offset %d is not used by this protocol", c, i-1)
	}
}

func fixed(b []byte, i, n int) (int, error) {
	if len(b)-i < n {
		return 0, malformed("truncated number at offset %d", i)
	}
	return i + n, nil
}

func scanStr(b []byte, i, n int) (int, error) {
	if n > len(b)-i {
		return 0, malformed("str of %d bytes with %d left", n, len(b)-i)
	}
	if !utf8.Valid(b[i : i+n]) {
		return 0, malformed("str at offset %d is not UTF-8", i)
	}
	return i + n, nil
}

func scanArray(b []byte, i, n, depth int) (int, error) {
	if depth >= MaxDepth {
		return 0, malformed("nesting deeper than %d", MaxDepth)
	}
	if n > len(b)-i {
		return 0, malformed("array of %d elements with %d bytes left", n, len(b)-i)
	}
	if n > MaxArrayLen {
		return 0, malformed("array of %d elements; at most %d", n, MaxArrayLen)
	}
	var err error
	for k := 0; k < n; k++ {
		if i, err = scan(b, i, depth+1); err != nil {
			return 0, err
		}
	}
	return i, nil
}

func scanMap(b []byte, i, n, depth int) (int, error) {
	if depth >= MaxDepth {
		return 0, malformed("nesting deeper than %d", MaxDepth)
	}
	if n > (len(b)-i)/2 {
		return 0, malformed("map of %d entries with %d bytes left", n, len(b)-i)
	}
	if n > MaxMapEntries {
		return 0, malformed("map of %d entries; at most %d", n, MaxMapEntries)
	}
	var seen map[string]struct{}
	if n > 1 {
		seen = make(map[string]struct{}, min(n, 64))
	}
	for k := 0; k < n; k++ {
		start := i
		if start >= len(b) || !isStr(b[start]) {
			return 0, malformed("map key at offset %d is not a string", start)
		}
		end, err := scan(b, i, depth+1)
		if err != nil {
			return 0, err
		}
		if seen != nil {
			key := string(b[start+strHeader(b[start]) : end])
			if _, dup := seen[key]; dup {
				return 0, malformed("duplicate map key at offset %d", start)
			}
			seen[key] = struct{}{}
		}
		if i, err = scan(b, end, depth+1); err != nil {
			return 0, err
		}
	}
	return i, nil
}

// strHeader is the size of the header of a str whose first byte is c.
func strHeader(c byte) int {
	switch c {
	case 0xd9:
		return 2
	case 0xda:
		return 3
	case 0xdb:
		return 5
	}
	return 1
}

func isStr(c byte) bool { return (c >= 0xa0 && c <= 0xbf) || c == 0xd9 || c == 0xda || c == 0xdb }
