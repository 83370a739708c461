//go:build long

// A cluster-process test: it runs with the long tests (README, "Long tests").

package e2e

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
)

// TestClusterMemberPagesAcrossReplicas: on a 3-node cluster (R3 buckets, a
// replica per node), a member added or removed through one node's replica
// shows in the very next member page from another node's replica, and those
// pages come from that replica's room index (its stats say so).
func TestClusterMemberPagesAcrossReplicas(t *testing.T) {
	nodes, adminFile := startCluster(t, 3)
	adminID, err := identity.Load(adminFile)
	if err != nil {
		t.Fatal(err)
	}
	ctx := natstest.Ctx(t, 9)
	ids := registerNew(ctx, t, clientAt(t, nodes[0].clientURL, adminID), "own", "guest")
	writer := clientAt(t, nodes[0].clientURL, ids["own"])
	reader := clientAt(t, nodes[2].clientURL, ids["own"])
	if _, _, err := writer.CreateRoom(ctx, "pages", "chat.pages", nil); err != nil {
		t.Fatal(err)
	}
	count := func() int {
		p, err := reader.Members(ctx, "pages", "", 0)
		if err != nil {
			t.Fatalf("members: %v", err)
		}
		return len(p.Members)
	}
	for i := 0; i < 20; i++ {
		if _, err := writer.AddMember(ctx, "pages", "guest"); err != nil {
			t.Fatal(err)
		}
		if n := count(); n != 2 {
			t.Fatalf("round %d: %d members right after the add on another node, want 2", i, n)
		}
		if _, err := writer.RemoveMember(ctx, "pages", "guest"); err != nil {
			t.Fatal(err)
		}
		if n := count(); n != 1 {
			t.Fatalf("round %d: %d members right after the removal on another node, want 1", i, n)
		}
	}
	// The pages were served; at least some from an index (the replica's
	// watch has loaded well within the test), the rest from the store.
	nc, err := nats.Connect(nodes[2].clientURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var stats []micro.Stats
	for _, a := range natstest.Gather(t, nc, membertest.Control(t, micro.StatsVerb), time.Second) {
		var st micro.Stats
		if err := json.Unmarshal(a, &st); err != nil {
			t.Fatalf("stats: %v", err)
		}
		stats = append(stats, st)
	}
	index, store := memberPageCounts(stats)
	if index+store < 40 || index == 0 {
		t.Fatalf("room_members stats: %d pages from the index, %d from the store; want 40 or more, some from the index", index, store)
	}
	t.Logf("member pages: %d from the index, %d from the store", index, store)
}
