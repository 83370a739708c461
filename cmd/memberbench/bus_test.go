package main

import (
	"bytes"
	"regexp"
	"testing"

	"github.com/unibus/membership/internal/natstest"
)

// TestBusBench runs the bus measurement at --quick scale and checks its
// line: every endpoint admitted, every removal cut the connection.
func TestBusBench(t *testing.T) {
	ctx := natstest.Ctx(t, 12)
	var out bytes.Buffer
	if err := busBench(ctx, options{quick: true, sync: "interval"}, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !regexp.MustCompile(`(?m)^BUS revoke_p99_ms=\d+ connect_p99_ms=\d+$`).MatchString(out.String()) {
		t.Fatalf("no BUS line:\n%s", out.String())
	}
	if !regexp.MustCompile(`100 endpoints connecting at once: 100 admitted`).MatchString(out.String()) {
		t.Fatalf("not every endpoint admitted:\n%s", out.String())
	}
}
