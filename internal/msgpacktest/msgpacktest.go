// Package msgpacktest holds hostile msgpack inputs shared by the tests of
// every decoder on the wire (envelope, service, client, e2e). The inputs
// themselves are language-neutral, in testdata/, so another implementation
// can check its decoder against the same bytes.
package msgpacktest

import (
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

//go:embed testdata/bombs.json
var bombsJSON []byte

// Bomb is a msgpack header that declares far more elements or bytes than
// follow it.
type Bomb struct {
	Name string // the msgpack type, e.g. "array32"
	Hdr  []byte // the header, with nothing after it
}

// Bombs returns testdata/bombs.json: one bomb per length-prefixed msgpack
// type, each declaring the largest length its header can hold. Each call
// returns fresh slices, so a test may append to them.
func Bombs() []Bomb {
	var file struct {
		Bombs []struct{ Name, Hex string }
	}
	if err := json.Unmarshal(bombsJSON, &file); err != nil {
		panic(fmt.Sprintf("testdata/bombs.json: %v", err))
	}
	out := make([]Bomb, len(file.Bombs))
	for i, b := range file.Bombs {
		hdr, err := hex.DecodeString(b.Hex)
		if err != nil {
			panic(fmt.Sprintf("testdata/bombs.json %s: %v", b.Name, err))
		}
		out[i] = Bomb{Name: b.Name, Hdr: hdr}
	}
	return out
}
