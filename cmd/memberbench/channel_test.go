package main

import (
	"bytes"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/unibus/membership/internal/natstest"
)

// TestChannelRow measures the channel row on an embedded server and checks
// its CHANNEL line: every sealed message delivered (none refused), a
// positive throughput ratio and a rekey delay. The targets themselves are
// memberbench's to measure (docs/performance.md), not a timed unit test's:
// on a loaded machine any bound here would fail for the machine's sake,
// and the row runs a tenth of --quick's messages.
func TestChannelRow(t *testing.T) {
	ctx := natstest.Ctx(t, 12)
	var out bytes.Buffer
	e := &env{o: options{sync: "interval", quick: true, clients: 1, workers: 2, idCache: true, keyCache: true, roomIndex: true, maxStale: time.Second, channelMsgs: 1000},
		out: &out, run: randHex(3), raw: randHex(3)}
	defer e.close()
	if err := e.start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.channelRow(ctx); err != nil {
		t.Fatalf("channel row: %v\n%s", err, out.String())
	}
	t.Log("\n" + out.String())
	if !regexp.MustCompile(`\(refused 0\)`).MatchString(out.String()) {
		t.Error("the subscriber refused messages")
	}
	m := regexp.MustCompile(`(?m)^CHANNEL channel_vs_plain=(\d+\.\d\d) rekey_extra_ms=(-?\d+\.\d)$`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no CHANNEL line in\n%s", out.String())
	}
	if r, _ := strconv.ParseFloat(m[1], 64); r <= 0 {
		t.Errorf("channel_vs_plain = %s", m[1])
	}
}
