//go:build long

package e2e

// The cluster-process tests (membershipd processes forming a 3-node
// cluster) run with the long tests (README, "Long tests"); the suite
// covers R3 in-process (TestCopyOfInFlightMutation).

import (
	"bytes"
	"testing"
	"time"

	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/internal/natstest"
)

// TestClusterQuickstart forms a 3-node cluster of membershipd processes,
// runs the quickstart across nodes, kills one node and keeps going.
func TestClusterQuickstart(t *testing.T) {
	start := time.Now()
	nodes, adminFile := startCluster(t, 3)
	t.Logf("cluster ready in %s", time.Since(start))
	defer func() { t.Logf("test took %s", time.Since(start)) }()
	adminID, err := identity.Load(adminFile)
	if err != nil {
		t.Fatal(err)
	}
	ctx := natstest.Ctx(t, 6)
	admin := clientAt(t, nodes[0].clientURL, adminID)
	ids := registerNew(ctx, t, admin, "alice", "bob")
	alice := clientAt(t, nodes[1].clientURL, ids["alice"])
	_, key, err := alice.CreateRoom(ctx, "ops", "chat.ops", []string{"bob"})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	bob := clientAt(t, nodes[2].clientURL, ids["bob"])
	got, _, err := bob.Key(ctx, "ops", 0)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("bob key = %x, %v; want %x", got, err, key)
	}

	t.Logf("quickstart done at %s", time.Since(start))
	// One node (its server and its service replica) dies: the other two
	// keep quorum and serve.
	nodes[0].kill(t)
	carol, _ := identity.New("carol")
	pub, _ := carol.Public()
	admin2 := clientAt(t, nodes[1].clientURL, adminID)
	if _, err := admin2.Register(ctx, pub, false); err != nil {
		t.Fatalf("register with a node down: %v", err)
	}
	if _, err := alice.AddMember(ctx, "ops", "carol"); err != nil {
		t.Fatalf("add with a node down: %v", err)
	}
	got, _, err = clientAt(t, nodes[2].clientURL, carol).Key(ctx, "ops", 0)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("carol key = %x, %v", got, err)
	}
}
