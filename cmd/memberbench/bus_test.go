package main

import (
	"bytes"
	"regexp"
	"strconv"
	"testing"

	"github.com/unibus/membership/internal/natstest"
)

// TestBusBench runs the bus measurement at --quick scale, in two rounds
// after one seeding, and checks its lines: every endpoint admitted (at once
// or on its retry) in each round, every removal cut the connection.
func TestBusBench(t *testing.T) {
	ctx := natstest.Ctx(t, 12)
	var out bytes.Buffer
	if err := busBench(ctx, options{quick: true, sync: "interval", busRounds: 2}, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !regexp.MustCompile(`(?m)^BUS revoke_p99_ms=\d+ connect_p99_ms=\d+$`).MatchString(out.String()) {
		t.Fatalf("no BUS line:\n%s", out.String())
	}
	// How many the storm admits at once is a figure of the machine's load
	// (docs/performance.md); that each endpoint is admitted, at once or on
	// its retry, is the callout's behaviour.
	rounds := regexp.MustCompile(`(?m)^# bus round \d of 2: .*100 endpoints connecting at once: (\d+) admitted in \S+ \((\d+) more on a retry\)`).FindAllStringSubmatch(out.String(), -1)
	if len(rounds) != 2 {
		t.Fatalf("want the storm figures of two rounds:\n%s", out.String())
	}
	for _, m := range rounds {
		if first, retried := atoi(t, m[1]), atoi(t, m[2]); first == 0 || first+retried != 100 {
			t.Fatalf("not every endpoint admitted:\n%s", out.String())
		}
	}
}

// TestBusClusterBench runs the cluster measurement on the documented
// cluster's config files with 12 connected endpoints: each of the four
// removed members, connected to n3, is cut (busRevoke fails otherwise) and
// the BUSCLUSTER line is printed.
func TestBusClusterBench(t *testing.T) {
	ctx := natstest.Ctx(t, 12)
	var out bytes.Buffer
	o := options{quick: true, busEndpoints: 12, busClusterConf: "../../docs/deploy/callout"}
	if err := busClusterBench(ctx, o, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !regexp.MustCompile(`(?m)^# bus cluster: 4 removals of members connected to n3`).MatchString(out.String()) ||
		!regexp.MustCompile(`(?m)^BUSCLUSTER revoke_p99_ms=\d+ cut_p99_ms=\d+$`).MatchString(out.String()) {
		t.Fatalf("no cluster figures:\n%s", out.String())
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
