package membertest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// keyFileVector is one identity file of identity/testdata/identity_files.json
// with the exact error every reader gives for it ("" when it is accepted).
type keyFileVector struct {
	Name  string `json:"name"`
	File  string `json:"file"`
	Error string `json:"error"`
}

// EachRefusedKeyFile runs check as a subtest for every identity file of
// identity/testdata/identity_files.json that is refused, written to a 0600
// file at path; want is the identity package's error for it (without the
// path). memberctl and membershipd are checked against these files, the
// identity package against all of them (its TestParseVectors).
func EachRefusedKeyFile(t *testing.T, check func(t *testing.T, path, want string)) {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	data, err := os.ReadFile(filepath.Join(filepath.Dir(here), "..", "..", "identity", "testdata", "identity_files.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Vectors []keyFileVector `json:"vectors"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, v := range doc.Vectors {
		if v.Error == "" {
			continue
		}
		n++
		t.Run(v.Name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "vector.id")
			if err := os.WriteFile(path, []byte(v.File), 0o600); err != nil {
				t.Fatal(err)
			}
			check(t, path, v.Error)
		})
	}
	if n == 0 {
		t.Fatal("no refused identity files among the vectors")
	}
}
