package client

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"
)

// FuzzParseChannel: decoding never panics, and what decodes is canonical:
// its fields written again give back exactly the input.
func FuzzParseChannel(f *testing.F) {
	data, err := os.ReadFile(channelVectorsFile)
	if err != nil {
		f.Fatal(err)
	}
	var vf channelVectorFile
	if err := json.Unmarshal(data, &vf); err != nil {
		f.Fatal(err)
	}
	for _, v := range vf.Vectors {
		b, _ := hex.DecodeString(v.MessageHex)
		f.Add(b)
	}
	f.Add([]byte{1, 1, 1, 'a', 0, 0, 0, 0, 0, 0, 0, 1, 1, 'b'})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseChannel(b)
		if err != nil {
			return
		}
		out := m.appendHeader(nil)
		if !bytes.Equal(out, m.header) {
			t.Fatalf("header %x re-encodes as %x", m.header, out)
		}
		out = binary.BigEndian.AppendUint32(out, uint32(len(m.ct)))
		out = append(append(out, m.ct...), m.sig...)
		if !bytes.Equal(out, b) {
			t.Fatalf("%x re-encodes as %x", b, out)
		}
	})
}
