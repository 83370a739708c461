package main

import (
	"bytes"
	"regexp"
	"strconv"
	"testing"

	"github.com/unibus/membership/internal/natstest"
)

// TestBusBench runs the bus measurement at --quick scale and checks its
// line: every endpoint admitted (at once or on its retry), every removal cut the connection.
func TestBusBench(t *testing.T) {
	ctx := natstest.Ctx(t, 12)
	var out bytes.Buffer
	if err := busBench(ctx, options{quick: true, sync: "interval"}, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !regexp.MustCompile(`(?m)^BUS revoke_p99_ms=\d+ connect_p99_ms=\d+$`).MatchString(out.String()) {
		t.Fatalf("no BUS line:\n%s", out.String())
	}
	// How many the storm admits at once is a figure of the machine's load
	// (docs/performance.md); that each endpoint is admitted, at once or on
	// its retry, is the callout's behaviour.
	m := regexp.MustCompile(`100 endpoints connecting at once: (\d+) admitted in \S+ \((\d+) more on a retry\)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no storm figures:\n%s", out.String())
	}
	if first, retried := atoi(t, m[1]), atoi(t, m[2]); first == 0 || first+retried != 100 {
		t.Fatalf("not every endpoint admitted:\n%s", out.String())
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
