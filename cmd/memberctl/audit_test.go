package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/nats-io/nkeys"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
)

// TestAuditCommand runs `memberctl audit` in-process against a real
// server: a genuine trail verifies (exit 0), a trail with one entry
// rewritten in the KV bucket is printed and fails (exit 3), a wrong pinned
// key fails (exit 3), and without --service-key the key stored by the
// first run is used.
func TestAuditCommand(t *testing.T) {
	spub := membertest.ServicePub()
	s, admin := membertest.Start(t, service.Config{})
	alice := membertest.Member(t, s, admin, "alice")
	membertest.Member(t, s, admin, "bob")
	ctx := natstest.Ctx(t, 3)
	if _, _, err := alice.CreateRoom(ctx, "r1", "chat.r1", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.AddMember(ctx, "r1", "bob"); err != nil {
		t.Fatal(err)
	}
	idFile := filepath.Join(t.TempDir(), "alice.id")
	if err := identity.Write(idFile, alice.Identity()); err != nil {
		t.Fatal(err)
	}
	runAudit := func(extra ...string) (int, auditJSON, string) {
		var out, errb bytes.Buffer
		args := append([]string{"audit", "r1", "--identity", idFile, "--server", s.ClientURL(), "--timeout", "2s", "--json"}, extra...)
		code := run(ctx, args, &out, &errb)
		var v auditJSON
		if out.Len() > 0 {
			if err := json.Unmarshal(out.Bytes(), &v); err != nil {
				t.Fatalf("output %q: %v", out.String(), err)
			}
		}
		return code, v, errb.String()
	}

	code, v, stderr := runAudit("--service-key", spub)
	if code != exitOK || !v.Verified || len(v.Entries) != 2 || v.Entries[1].Op != "room.add" || v.Entries[1].Target != "bob" {
		t.Fatalf("genuine trail: exit %d, %+v, %s", code, v, stderr)
	}

	// The key that verified is now pinned beside the identity file.
	if code, v, stderr := runAudit(); code != exitOK || v.ServiceKey != spub {
		t.Fatalf("with the stored pin: exit %d, %+v, %s", code, v, stderr)
	}
	other, _ := nkeys.CreateServer()
	opub, _ := other.PublicKey()
	if code, _, _ := runAudit("--service-key", opub); code != exitLocal {
		t.Fatalf("wrong pinned key: exit %d, want %d", code, exitLocal)
	}

	kv := membertest.RoomKV(t, natstest.Connect(t, s), "r1")
	ent, err := kv.Get(ctx, "audit.room.r1.000000000002")
	if err != nil {
		t.Fatal(err)
	}
	var e api.AuditEntry
	if err := msgpack.Unmarshal(ent.Value(), &e); err != nil {
		t.Fatal(err)
	}
	e.Target = "mallory"
	forged, _ := msgpack.Marshal(&e)
	if _, err := kv.Put(ctx, "audit.room.r1.000000000002", forged); err != nil {
		t.Fatal(err)
	}
	code, v, _ = runAudit("--service-key", spub)
	if code != exitLocal || v.Verified || v.Problem == "" || len(v.Entries) != 2 {
		t.Fatalf("tampered trail: exit %d, %+v", code, v)
	}
}
