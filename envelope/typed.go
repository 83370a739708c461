package envelope

import (
	"encoding/binary"
	"fmt"
	"math"
	"reflect"
	"strings"
	"sync"
)

// typeCheck holds msgpack bytes that passed [Check] to the Go type they are
// about to be decoded into, so that the msgpack library is only ever handed
// bytes it decodes without a complaint of its own. Errors name the field and
// say what was expected in this package's words; the library's messages
// ("invalid code=a1 decoding int64") never reach a caller.
//
// The rules (docs/protocol.md §6):
//   - a struct is a map with str keys, each a field the type declares; the
//     array form of a struct is refused (msgpack would decode it by field
//     position, an order the protocol does not define);
//   - str fields take str, bin fields ([]byte) take bin: the two are not
//     interchangeable, in the envelope or in bodies;
//   - int fields take any int encoding of a value that fits; uint fields
//     take only non-negative values (a negative one is refused, never
//     wrapped round to 2^64-1); bool takes true or false; floats are never
//     used by the protocol;
//   - nil (c0) anywhere means the zero value, as an absent key does;
//   - an interface field (any) takes any value.
type typeCheck struct{ b []byte }

// checkInto checks b (already scanned by [Check]) against v's type.
func checkInto(b []byte, v any) error {
	t := reflect.TypeOf(v)
	if t == nil || t.Kind() != reflect.Pointer {
		return malformed("decoding needs a pointer, got %T", v)
	}
	_, err := typeCheck{b}.value(0, t.Elem(), "")
	return err
}

// wireKind names the msgpack type starting with byte c, for error messages.
func wireKind(c byte) string {
	switch {
	case c <= 0x7f || c == 0xcc || c == 0xcd || c == 0xce || c == 0xcf:
		return "a non-negative int"
	case c >= 0xe0 || (c >= 0xd0 && c <= 0xd3):
		return "a signed int"
	case isMapHeader(c):
		return "a map"
	case (c >= 0x90 && c <= 0x9f) || c == 0xdc || c == 0xdd:
		return "an array"
	case isStr(c):
		return "a str"
	case c >= 0xc4 && c <= 0xc6:
		return "a bin"
	case c == 0xc2 || c == 0xc3:
		return "a bool"
	case c == 0xca || c == 0xcb:
		return "a float"
	}
	return fmt.Sprintf("type 0x%02x", c)
}

func fieldErr(path, want string, c byte) error {
	if path == "" {
		return malformed("expected %s, got %s", want, wireKind(c))
	}
	return malformed("field %s: expected %s, got %s", path, want, wireKind(c))
}

// value checks the value at b[i] against t and returns the offset after it.
func (w typeCheck) value(i int, t reflect.Type, path string) (int, error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	c := w.b[i]
	if c == 0xc0 || t.Kind() == reflect.Interface {
		return scan(w.b, i, 0)
	}
	switch t.Kind() {
	case reflect.Struct:
		return w.structMap(i, t, path)
	case reflect.Map:
		return w.mapOf(i, t, path)
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			if c < 0xc4 || c > 0xc6 {
				return 0, fieldErr(path, "a bin", c)
			}
			return scan(w.b, i, 0)
		}
		return w.array(i, t, path)
	case reflect.String:
		if !isStr(c) {
			return 0, fieldErr(path, "a str", c)
		}
		return scan(w.b, i, 0)
	case reflect.Bool:
		if c != 0xc2 && c != 0xc3 {
			return 0, fieldErr(path, "a bool", c)
		}
		return i + 1, nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return w.integer(i, t, path)
	}
	return 0, malformed("field %s: a %s field is not part of the protocol", path, t.Kind())
}

// header reads a map or array header at b[i]: the count and the offset of
// the first element.
func (w typeCheck) header(i int) (n, next int) {
	c := w.b[i]
	switch {
	case c >= 0x80 && c <= 0x8f:
		return int(c & 0x0f), i + 1
	case c >= 0x90 && c <= 0x9f:
		return int(c & 0x0f), i + 1
	case c == 0xdc || c == 0xde:
		return int(binary.BigEndian.Uint16(w.b[i+1:])), i + 3
	}
	return int(binary.BigEndian.Uint32(w.b[i+1:])), i + 5 // dd, df
}

// keyAt returns the str key at b[i] and the offset after it.
func (w typeCheck) keyAt(i int) (string, int) {
	h := strHeader(w.b[i])
	n := 0
	switch w.b[i] {
	case 0xd9:
		n = int(w.b[i+1])
	case 0xda:
		n = int(binary.BigEndian.Uint16(w.b[i+1:]))
	case 0xdb:
		n = int(binary.BigEndian.Uint32(w.b[i+1:]))
	default:
		n = int(w.b[i] & 0x1f)
	}
	return string(w.b[i+h : i+h+n]), i + h + n
}

func (w typeCheck) structMap(i int, t reflect.Type, path string) (int, error) {
	if !isMapHeader(w.b[i]) {
		return 0, fieldErr(path, "a map (the array form of a struct is not accepted)", w.b[i])
	}
	fields := fieldsOf(t)
	n, i := w.header(i)
	for k := 0; k < n; k++ {
		name, next := w.keyAt(i) // Check made every key a str
		f, ok := fields[name]
		if !ok {
			return 0, malformed("unknown field %q", join(path, name))
		}
		var err error
		if i, err = w.value(next, f, join(path, name)); err != nil {
			return 0, err
		}
	}
	return i, nil
}

func (w typeCheck) mapOf(i int, t reflect.Type, path string) (int, error) {
	if !isMapHeader(w.b[i]) {
		return 0, fieldErr(path, "a map", w.b[i])
	}
	if t.Key().Kind() != reflect.String {
		return 0, malformed("field %s: maps have str keys", path)
	}
	n, i := w.header(i)
	for k := 0; k < n; k++ {
		name, next := w.keyAt(i)
		var err error
		if i, err = w.value(next, t.Elem(), join(path, name)); err != nil {
			return 0, err
		}
	}
	return i, nil
}

func (w typeCheck) array(i int, t reflect.Type, path string) (int, error) {
	c := w.b[i]
	if !((c >= 0x90 && c <= 0x9f) || c == 0xdc || c == 0xdd) {
		return 0, fieldErr(path, "an array", c)
	}
	n, i := w.header(i)
	for k := 0; k < n; k++ {
		var err error
		if i, err = w.value(i, t.Elem(), fmt.Sprintf("%s[%d]", path, k)); err != nil {
			return 0, err
		}
	}
	return i, nil
}

// integer checks an int or uint field: the value must fit the field.
func (w typeCheck) integer(i int, t reflect.Type, path string) (int, error) {
	c := w.b[i]
	var neg bool
	var u uint64 // magnitude when !neg, the two's complement value when neg
	size := 0
	switch {
	case c <= 0x7f:
		u = uint64(c)
	case c >= 0xe0:
		neg, u = true, uint64(int64(int8(c)))
	case c >= 0xcc && c <= 0xcf:
		size = 1 << (c - 0xcc)
	case c >= 0xd0 && c <= 0xd3:
		size = 1 << (c - 0xd0)
	default:
		return 0, fieldErr(path, intName(t), c)
	}
	if size > 0 {
		for k := 1; k <= size; k++ {
			u = u<<8 | uint64(w.b[i+k])
		}
		if c >= 0xd0 { // signed: sign-extend
			s := int64(u<<(64-8*size)) >> (64 - 8*size)
			neg, u = s < 0, uint64(s)
		}
	}
	unsigned := t.Kind() >= reflect.Uint && t.Kind() <= reflect.Uint64
	switch {
	case neg && unsigned:
		return 0, malformed("field %s: must not be negative, got %d", path, int64(u))
	case unsigned && t.Bits() < 64 && u > (uint64(1)<<t.Bits())-1:
		return 0, malformed("field %s: %d is larger than %d", path, u, (uint64(1)<<t.Bits())-1)
	case !unsigned && !neg && u > uint64(math.MaxInt64)>>(64-t.Bits()):
		return 0, malformed("field %s: %d is larger than %d", path, u, uint64(math.MaxInt64)>>(64-t.Bits()))
	case !unsigned && neg && int64(u) < math.MinInt64>>(64-t.Bits()):
		return 0, malformed("field %s: %d is smaller than %d", path, int64(u), int64(math.MinInt64)>>(64-t.Bits()))
	}
	return i + 1 + size, nil
}

func intName(t reflect.Type) string {
	if t.Kind() >= reflect.Uint && t.Kind() <= reflect.Uint64 {
		return "a non-negative int"
	}
	return "an int"
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// fieldsOf maps a struct's msgpack keys to field types (cached per type).
func fieldsOf(t reflect.Type) map[string]reflect.Type {
	if f, ok := fieldCache.Load(t); ok {
		return f.(map[string]reflect.Type)
	}
	f := map[string]reflect.Type{}
	for k := range t.NumField() {
		sf := t.Field(k)
		if !sf.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(sf.Tag.Get("msgpack"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		f[name] = sf.Type
	}
	fieldCache.Store(t, f)
	return f
}

var fieldCache sync.Map // reflect.Type → map[string]reflect.Type
