//go:build long

// Seeding a scale layout takes over a minute under -race: it runs with the
// long tests (README, "Long tests").

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/unibus/membership/internal/natstest"
)

// TestScaleState seeds the scale layout into a deployment, keeps it in a
// state file, then measures it again and seeds it further from that file:
// nothing is registered or created twice, the clients keep their rooms, and
// the member-list page comparison is reported.
func TestScaleState(t *testing.T) {
	ctx := natstest.Ctx(t, 18)
	dir := t.TempDir()
	s := natstest.ServerWith(t, &server.Options{StoreDir: filepath.Join(dir, "js"), MaxPayload: 8 << 20})
	state := filepath.Join(dir, "state.json")
	o := options{
		natsURL: s.ClientURL(), sync: "interval", clients: 3, duration: 200 * time.Millisecond, mutations: 6,
		identities: 10, rooms: 12, members: 3, workers: 2, idCache: true, keyCache: true,
		maxStale: time.Second, ops: "read,key,mine,mutate", roomsPerClient: 2, state: state,
		seedOnly: true, seedWorkers: 4, bigRoom: 260, smallRoom: 5, pages: true,
	}
	var out bytes.Buffer
	if err := benchTo(ctx, o, &out); err != nil {
		t.Fatalf("seed: %v\n%s", err, out.String())
	}
	t.Log("\n" + out.String())
	if !strings.Contains(out.String(), "created 12 rooms × 3 members") || strings.Contains(out.String(), "RATIOS") {
		t.Errorf("seed-only run: unexpected report")
	}
	if fi, err := os.Stat(state); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", fi, err)
	}
	// Measure from the state, seeding 8 more rooms owned by non-clients.
	o.seedOnly, o.rooms = false, 20
	out.Reset()
	if err := benchTo(ctx, o, &out); err != nil {
		t.Fatalf("measure: %v\n%s", err, out.String())
	}
	report := out.String()
	t.Log("\n" + report)
	if strings.Contains(report, "registered") {
		t.Error("identities registered again")
	}
	if !strings.Contains(report, "created 8 rooms") {
		t.Error("the 8 further rooms were not created")
	}
	if n := len(regexp.MustCompile(`(?m)^PAGES room=\S+ members=(5|260) limit=\d+ pages=\d+ `).FindAllString(report, -1)); n != 4 {
		t.Errorf("%d PAGES lines, want 4", n)
	}
	if strings.Contains(report, "MISMATCH") || strings.Contains(report, "first error") {
		t.Error("errors in the measured operations")
	}
	st, err := loadState(state)
	if err != nil || st == nil {
		t.Fatal(err)
	}
	if st.Rooms != 20 || len(st.ClientRooms) != 3 || len(st.ClientRooms[0]) != 2 || st.BigMembers != 260 {
		t.Errorf("state: %d rooms, client rooms %v, big room %d", st.Rooms, st.ClientRooms, st.BigMembers)
	}
	lines := strings.Split(strings.TrimSpace(report), "\n")
	if !strings.HasPrefix(lines[len(lines)-1], "RATIOS ") {
		t.Errorf("last line %q", lines[len(lines)-1])
	}
}
