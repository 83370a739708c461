package msgpacktest_test

import (
	"bytes"
	"testing"

	"github.com/unibus/membership/internal/msgpacktest"
)

// TestBombs checks the table against the msgpack spec: one bomb per
// length-prefixed type, each its type byte and the largest length the
// header can hold, nothing after it.
func TestBombs(t *testing.T) {
	want := map[string]struct {
		typ   byte
		width int
	}{
		"array16": {0xdc, 2}, "array32": {0xdd, 4}, "map16": {0xde, 2}, "map32": {0xdf, 4},
		"bin8": {0xc4, 1}, "bin16": {0xc5, 2}, "bin32": {0xc6, 4},
		"str8": {0xd9, 1}, "str16": {0xda, 2}, "str32": {0xdb, 4},
	}
	bombs := msgpacktest.Bombs()
	if len(bombs) != len(want) {
		t.Fatalf("%d bombs, want %d", len(bombs), len(want))
	}
	for _, b := range bombs {
		w, ok := want[b.Name]
		if !ok {
			t.Fatalf("unknown bomb %q", b.Name)
		}
		delete(want, b.Name)
		if exp := append([]byte{w.typ}, bytes.Repeat([]byte{0xff}, w.width)...); !bytes.Equal(b.Hdr, exp) {
			t.Errorf("%s = %x, want %x", b.Name, b.Hdr, exp)
		}
	}
}
