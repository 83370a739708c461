package identity

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// scan reads the `name: value` lines of a key file into a map. Only the
// given names are allowed, each at most once: a key file is written by a
// program, so anything else is a mistake (a typo that would leave a field
// unset, a second value that would silently win) and is refused rather
// than guessed at.
func scan(data []byte, names ...string) (map[string]string, error) {
	fields := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return nil, errors.New("a line is not `name: value`")
		}
		k = strings.TrimSpace(k)
		switch _, seen := fields[k]; {
		case !slices.Contains(names, k):
			return nil, fmt.Errorf("unknown field %q", k)
		case seen:
			return nil, fmt.Errorf("field %q given twice", k)
		}
		fields[k] = strings.TrimSpace(v)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return fields, nil
}
