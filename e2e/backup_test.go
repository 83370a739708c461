package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/store"
	"github.com/unibus/membership/subjects"
)

// TestBackupRestore runs docs/deploy.md's backup block and its restore
// block (section 8), taken from the page, on a deployment of one room shard
// and on one of four: the backup of a running single node, the restore into
// a fresh three-node cluster, made R3 as the page does. The service then
// runs there with the same service key: the room, its keys and its audit
// chain verify; a mutation committed before the backup and sent again is
// answered 208 with its first reply; a read stamped before the restore is
// refused by the nonce floor (the read claims were not backed up).
func TestBackupRestore(t *testing.T) {
	backup := shellBlock(t, deployDoc, "backup stream")
	restore := shellBlock(t, deployDoc, "backup restore stream")
	for _, shards := range []int{1, 4} {
		t.Run(fmt.Sprintf("%d room shards", shards), func(t *testing.T) {
			t.Parallel()
			backupRestore(t, shards, backup, restore)
		})
	}
}

func backupRestore(t *testing.T, shards int, backup, restore string) {
	svcPub := membertest.ServicePub()
	src, _, member := shardedDeployment(t, shards)
	alice, bob, carol := member("alice"), member("bob"), member("carol")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var key []byte
	var rooms []string
	for i := range 4 { // rooms in several shards
		id := fmt.Sprintf("r%d", i+1)
		_, k, err := alice.CreateRoom(ctx, id, "chat."+id, []string{"bob"})
		if err != nil {
			t.Fatal(err)
		}
		if key == nil {
			key = k
		}
		rooms = append(rooms, id)
	}
	mutation := addRequest(t, alice, carol, "r1", key, membertest.Nonce(t))
	first := membertest.RequestOp(t, natstest.Connect(t, src), subjects.OpRoomAdd, mutation)
	first.Expect(t, 0, "")
	read := membertest.Signed(t, bob.Identity().Sign, subjects.OpRoomGet, membertest.Body(t, api.RoomRequest{Room: "r1"}))

	op := newOperatorShell(t)
	op.context(t, src.ClientURL())
	op.run(t, backup)
	backedUp, _ := os.ReadDir(filepath.Join(op.home, "backup"))
	want := 2 // KV_membership and OBJ_membership-keys
	if shards > 1 {
		want += shards
	}
	if len(backedUp) != want {
		t.Fatalf("the backup block saved %d streams, want %d (every KV stream and the object store)", len(backedUp), want)
	}

	dst, _ := heldCluster(t, 3)
	var urls []string
	for _, s := range dst {
		urls = append(urls, s.ClientURL())
	}
	op.context(t, strings.Join(urls, ","))
	op.run(t, restore)
	r3Service(t, dst[0])
	nc := natstest.Connect(t, dst[0])

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
	restored := client.New(nc, alice.Identity(), client.WithServiceKey(svcPub))
	for _, id := range rooms {
		entries, err := restored.Audit(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if err := client.VerifyAudit(svcPub, id, entries); err != nil || len(entries) < 1 {
			t.Fatalf("audit chain of %s after the restore: %d entries, %v", id, len(entries), err)
		}
	}
	page, err := client.New(nc, bob.Identity(), client.WithServiceKey(svcPub)).MyRooms(ctx, "", 100)
	if err != nil || len(page.Rooms) != len(rooms) {
		t.Fatalf("bob's rooms after the restore: %+v, %v", page, err)
	}
}

// r3Service starts a service replica on s whose buckets are R3, as the
// restore block leaves them.
func r3Service(t *testing.T, s *server.Server) {
	t.Helper()
	nc := natstest.Connect(t, s)
	st, err := store.Open(natstest.Ctx(t, 1), natstest.JetStream(t, nc), store.Config{Bucket: subjects.DefaultBucket, KeysBucket: subjects.DefaultKeysBucket,
		MaxTTL: service.NonceTTL(service.DefaultSkew), Replicas: 3})
	if err != nil {
		t.Fatalf("open the restored buckets: %v", err)
	}
	svc, err := service.Start(nc, st, service.Config{ServiceKey: membertest.ServiceKey(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// operatorShell runs docs/deploy.md's operator commands: bash with the
// nats CLI and jq on its PATH, a home of its own holding the
// membership-operator context, and MEMBERSHIP_HOME under it.
type operatorShell struct {
	home string // MEMBERSHIP_HOME
	env  []string
}

func newOperatorShell(t *testing.T) *operatorShell {
	t.Helper()
	if _, err := exec.LookPath("jq"); err != nil {
		t.Fatalf("docs/deploy.md needs jq: %v", err)
	}
	dir := t.TempDir()
	home := filepath.Join(dir, "membership")
	if err := os.MkdirAll(home, 0o700); err != nil {
		t.Fatal(err)
	}
	return &operatorShell{home: home, env: []string{"HOME=" + dir, "XDG_CONFIG_HOME=" + filepath.Join(dir, ".config"),
		"PATH=" + filepath.Dir(natstest.NatsCLI(t)) + string(os.PathListSeparator) + os.Getenv("PATH"),
		"MEMBERSHIP_HOME=" + home, "NO_COLOR=1"}}
}

// context points the membership-operator context at urls.
func (o *operatorShell) context(t *testing.T, urls string) {
	t.Helper()
	o.run(t, "nats context save membership-operator --server "+urls+" >/dev/null\n")
}

// run runs script, failing on its first failing command, and returns its
// output.
func (o *operatorShell) run(t *testing.T, script string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), natstest.Within(6))
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", "set -euo pipefail\n"+script)
	cmd.Env = o.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s\noutput:\n%s", err, script, out)
	}
	return string(out)
}
