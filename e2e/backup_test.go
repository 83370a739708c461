package e2e

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/subjects"
)

// TestBackupRestore backs up the two streams of a running deployment with
// the nats CLI, as docs/deploy.md's drill does, restores them into a fresh
// server and runs the service there with the same service key: the room,
// its keys and its audit chain verify; a mutation committed before the
// backup and sent again is answered 208 with its first reply; a read
// stamped before the restore is refused by the nonce floor (the read
// claims were not backed up).
func TestBackupRestore(t *testing.T) {
	svcPub := membertest.ServicePub()
	src := natstest.Server(t)
	membertest.Service(t, src, service.Config{})
	admin := membertest.Admin(t, src)
	alice := membertest.Member(t, src, admin, "alice")
	bob := membertest.Member(t, src, admin, "bob")
	carol := membertest.Member(t, src, admin, "carol")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, key, err := alice.CreateRoom(ctx, "r1", "chat.r1", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	mutation := addRequest(t, alice, carol, "r1", key, membertest.Nonce(t))
	first := membertest.RequestOp(t, natstest.Connect(t, src), subjects.OpRoomAdd, mutation)
	first.Expect(t, 0, "")
	read := membertest.Signed(t, bob.Identity().Sign, subjects.OpRoomGet, membertest.Body(t, api.RoomRequest{Room: "r1"}))

	dir := t.TempDir()
	// The KV stream first, as docs/deploy.md says.
	streams := []string{"KV_" + subjects.DefaultBucket, "OBJ_" + subjects.DefaultKeysBucket}
	for _, stream := range streams {
		if _, errOut, err := natstest.RunNats(t, src, nil, "backup", "stream", stream, filepath.Join(dir, stream), "--no-progress"); err != nil {
			t.Fatalf("backup %s: %v\n%s", stream, err, errOut)
		}
	}
	dst := natstest.Server(t)
	for _, stream := range streams {
		if _, errOut, err := natstest.RunNats(t, dst, nil, "backup", "restore", "stream", filepath.Join(dir, stream), "--no-progress"); err != nil {
			t.Fatalf("restore %s: %v\n%s", stream, err, errOut)
		}
	}
	membertest.Service(t, dst, service.Config{})
	nc := natstest.Connect(t, dst)

	r := membertest.RequestOp(t, nc, subjects.OpRoomAdd, mutation)
	r.Expect(t, subjects.CodeAlreadyApplied, api.KindAlreadyApplied.Reason())
	if !bytes.Equal(r.Data, first.Data) {
		t.Fatalf("resent mutation after the restore: body %x, want the first reply %x", r.Data, first.Data)
	}
	membertest.RequestOp(t, nc, subjects.OpRoomGet, read).Expect(t, subjects.CodeUnauthorized, api.KindNonceFloor.Reason())

	for _, who := range []*client.Client{bob, carol} {
		c := client.New(nc, who.Identity(), client.WithServiceKey(svcPub))
		got, _, err := c.Key(ctx, "r1", 0)
		if err != nil || !bytes.Equal(got, key) {
			t.Fatalf("%s's key after the restore: %v", who.Identity().Endpoint, err)
		}
	}
	entries, err := client.New(nc, alice.Identity(), client.WithServiceKey(svcPub)).Audit(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	if err := client.VerifyAudit(svcPub, "r1", entries); err != nil || len(entries) != 2 {
		t.Fatalf("audit chain after the restore: %d entries, %v", len(entries), err)
	}
}
