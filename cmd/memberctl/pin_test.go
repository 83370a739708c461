package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/client"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
)

// memberctlAt runs memberctl in-process with an identity against s.
func memberctlAt(t *testing.T, s *server.Server, idFile string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), natstest.Within(3))
	defer cancel()
	var out, errb bytes.Buffer
	code = run(ctx, append([]string{"--identity", idFile, "--server", s.ClientURL(), "--timeout", "1s"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

func writeIdentity(t *testing.T, dir string, id *identity.Identity) string {
	t.Helper()
	p := filepath.Join(dir, id.Endpoint+".id")
	if err := identity.Write(p, id); err != nil {
		t.Fatal(err)
	}
	return p
}

func storedPin(t *testing.T, dir string) knownService {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, knownFile))
	if err != nil {
		t.Fatal(err)
	}
	var k knownServices
	if err := json.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	if len(k.Services) != 1 {
		t.Fatalf("%s holds %d deployments, want 1", knownFile, len(k.Services))
	}
	for _, e := range k.Services {
		return *e
	}
	return knownService{}
}

// TestPinning (issue 11): memberctl pins the service key on first use
// beside the identity, refuses another key naming both and how to accept
// it, accepts it by hand with --service-key, moves through a rotation
// statement signed by the pinned key, says so on stderr when told not to
// verify, and reads the identities chain.
func TestPinning(t *testing.T) {
	k1, p1 := membertest.ServiceKey(), membertest.ServicePub()
	k2, _ := nkeys.CreateServer()
	p2, _ := k2.PublicKey()
	s := natstest.Server(t)
	svc := membertest.Service(t, s, service.Config{ServiceKey: k1})
	admin := membertest.Admin(t, s)
	membertest.Member(t, s, admin, "bob") // identities entry 1, signed by k1
	dir := t.TempDir()
	adminFile := writeIdentity(t, dir, admin.Identity())

	code, _, stderr := memberctlAt(t, s, adminFile, "whoami")
	if code != exitOK || !strings.Contains(stderr, "trusting service key "+p1) {
		t.Fatalf("first use: exit %d, stderr %q", code, stderr)
	}
	if e := storedPin(t, dir); e.Key != p1 {
		t.Fatalf("stored %+v, want key %s", e, p1)
	}

	// Another key with no statement: refused, both keys and the way to
	// accept it named.
	_ = svc.Stop()
	svc = membertest.Service(t, s, service.Config{ServiceKey: k2})
	code, _, stderr = memberctlAt(t, s, adminFile, "whoami")
	if code != exitLocal || !strings.Contains(stderr, p1) || !strings.Contains(stderr, p2) || !strings.Contains(stderr, "--service-key "+p2) {
		t.Fatalf("other key: exit %d, stderr %q", code, stderr)
	}
	if e := storedPin(t, dir); e.Key != p1 {
		t.Fatalf("a refused key was stored: %+v", e)
	}

	// Accepted by hand, as the hint says, once the operator confirmed it:
	// stored only because replies verified under it.
	code, _, stderr = memberctlAt(t, s, adminFile, "whoami", "--service-key", p2)
	if code != exitOK || !strings.Contains(stderr, "service key "+p2+" pinned") {
		t.Fatalf("--service-key: exit %d, stderr %q", code, stderr)
	}
	if e := storedPin(t, dir); e.Key != p2 || len(e.Previous) != 1 || e.Previous[0] != p1 {
		t.Fatalf("after --service-key stored %+v", e)
	}

	// A new key with a statement signed by the pinned one: followed.
	k3, _ := nkeys.CreateServer()
	p3, _ := k3.PublicKey()
	_ = svc.Stop()
	membertest.Service(t, s, service.Config{ServiceKey: k3, PreviousServiceKey: k2})
	code, _, stderr = memberctlAt(t, s, adminFile, "whoami")
	if code != exitOK || !strings.Contains(stderr, "rotated from "+p2+" to "+p3) {
		t.Fatalf("rotation: exit %d, stderr %q", code, stderr)
	}
	if e := storedPin(t, dir); e.Key != p3 || len(e.Previous) != 2 || e.Previous[1] != p2 {
		t.Fatalf("after rotation stored %+v", e)
	}

	// The identities chain, written under k1 and k3, verifies for an admin.
	admin3 := client.New(natstest.Connect(t, s), admin.Identity(), client.WithServiceKey(p3))
	membertest.Member(t, s, admin3, "carol") // identities entry 2, signed by k3
	code, out, stderr := memberctlAt(t, s, adminFile, "audit", "--identities", "--json")
	var v auditJSON
	if err := json.Unmarshal([]byte(out), &v); code != exitOK || err != nil || !v.Verified || len(v.Entries) != 2 || v.Entries[1].Target != "carol" {
		t.Fatalf("audit --identities: exit %d, %s %s", code, out, stderr)
	}

	code, _, stderr = memberctlAt(t, s, adminFile, "whoami", "--insecure-no-verify")
	if code != exitOK || !strings.Contains(stderr, "NOT verified") {
		t.Fatalf("opt-out: exit %d, stderr %q", code, stderr)
	}
}

// TestAuditRollback (issue 11): memberctl remembers the last audit entry
// it verified; a trail that later ends before it (a rollback or a truncated
// tail), or differs at it, fails.
func TestAuditRollback(t *testing.T) {
	ctx := natstest.Ctx(t, 3)
	s, admin := membertest.Start(t, service.Config{})
	alice := membertest.Member(t, s, admin, "alice")
	membertest.Member(t, s, admin, "bob")
	if _, _, err := alice.CreateRoom(ctx, "r1", "chat.r1", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.AddMember(ctx, "r1", "bob"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	aliceFile := writeIdentity(t, dir, alice.Identity())
	if code, out, stderr := memberctlAt(t, s, aliceFile, "audit", "r1"); code != exitOK {
		t.Fatalf("first audit: exit %d %s %s", code, out, stderr)
	}
	if h := storedPin(t, dir).Audit["room.r1"]; h.Seq != 2 {
		t.Fatalf("remembered head %+v, want seq 2", h)
	}
	// Truncate the tail, as a store restored from an old backup would.
	kv := membertest.RoomKV(t, natstest.Connect(t, s), "r1")
	if err := kv.Delete(ctx, "audit.room.r1.000000000002"); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := memberctlAt(t, s, aliceFile, "audit", "r1")
	if code != exitLocal || !strings.Contains(stderr, "rolled back") || !strings.Contains(stderr, "entry 2") {
		t.Fatalf("truncated trail: exit %d, stderr %q", code, stderr)
	}
}
