package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/store"
	"github.com/unibus/membership/subjects"
)

// shardedDeployment creates a deployment of n room shards on a new server
// and starts two service replicas on it (membertest's store opens the
// deployment as created).
func shardedDeployment(t *testing.T, n int) (*server.Server, *store.Store, func(string) *client.Client) {
	t.Helper()
	return shardedDeploymentWith(t, n, service.Config{})
}

// shardedDeploymentWith is shardedDeployment with the replicas' cfg.
func shardedDeploymentWith(t *testing.T, n int, cfg service.Config) (*server.Server, *store.Store, func(string) *client.Client) {
	t.Helper()
	s := natstest.Server(t)
	js, err := jetstream.New(natstest.Connect(t, s))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(natstest.Ctx(t, 1), js, store.Config{Bucket: subjects.DefaultBucket, KeysBucket: subjects.DefaultKeysBucket,
		MaxTTL: service.NonceTTL(service.DefaultSkew), Shards: n})
	if err != nil {
		t.Fatal(err)
	}
	membertest.Service(t, s, cfg)
	membertest.Service(t, s, cfg)
	admin := membertest.Admin(t, s)
	return s, st, func(ep string) *client.Client { return membertest.Member(t, s, admin, ep) }
}

// TestShardsEndToEnd: on four room shards every key of a room — record,
// members, directory entries, epoch, audit chain — and the nonce of each of
// its mutations are in the room's shard and nowhere else; identities and
// subject claims are in the base bucket; a member lists its rooms of every
// shard at once after each join; the same signed mutation sent again is
// "already applied"; a subject held by a room of one shard is refused to a
// room of another, and free again once its room is deleted.
func TestShardsEndToEnd(t *testing.T) {
	_, st, member := shardedDeployment(t, 4)
	alice, bob := member("alice"), member("bob")
	ctx := natstest.Ctx(t, 1)
	var rooms []string
	used := map[int]bool{}
	for i := 0; i < 8; i++ {
		id := fmt.Sprintf("r%d", i)
		if _, _, err := alice.CreateRoom(ctx, id, "chat."+id, nil); err != nil {
			t.Fatalf("create %s: %v", id, err)
		}
		if _, err := alice.AddMember(ctx, id, "bob"); err != nil {
			t.Fatalf("add bob to %s: %v", id, err)
		}
		page, err := bob.MyRooms(ctx, "", 100)
		if err != nil || len(page.Rooms) != i+1 {
			t.Fatalf("bob's rooms right after joining %s: %+v, %v", id, page, err)
		}
		rooms = append(rooms, id)
		used[store.RoomShard(id, 4)] = true
	}
	if len(used) < 3 {
		t.Fatalf("8 rooms in %d shards only: pick other ids", len(used))
	}

	for _, id := range rooms {
		home := st.Room(id)
		for _, key := range []string{"room." + id, "member." + id + ".bob", "eprooms.bob." + id, "epoch." + id + ".1", "audithead.room." + id, "audit.room." + id + ".000000000002"} {
			for _, sh := range st.Shards() {
				e, err := sh.Get(ctx, key)
				if err != nil {
					t.Fatal(err)
				}
				if e.Exists() != (sh == home) {
					t.Fatalf("%s in %s: %v; its room's shard is %s", key, sh.Name(), e.Exists(), home.Name())
				}
			}
		}
		nonces, err := home.Keys(ctx, "nonce.")
		if err != nil || len(nonces) < 2 {
			t.Fatalf("nonces in %s (room %s): %d, %v; want its create's and its add's", home.Name(), id, len(nonces), err)
		}
	}
	for _, prefix := range []string{"id.", "signer.", "subject.", "audit.identities."} {
		for _, sh := range st.Shards() {
			keys, err := sh.Keys(ctx, prefix)
			if err != nil {
				t.Fatal(err)
			}
			if (len(keys) > 0) != (sh == st.Base()) {
				t.Fatalf("%d keys under %s in %s (base %s)", len(keys), prefix, sh.Name(), st.Base().Name())
			}
		}
	}
	if n, err := st.Base().Keys(ctx, "room."); err != nil || len(n) != 0 {
		t.Fatalf("room keys in the base bucket: %v, %v", n, err)
	}

	// A subject across shards.
	other := ""
	for i := 0; other == ""; i++ {
		if id := fmt.Sprintf("x%d", i); store.RoomShard(id, 4) != store.RoomShard("r0", 4) {
			other = id
		}
	}
	if _, _, err := alice.CreateRoom(ctx, other, "chat.r0", nil); !errors.Is(err, client.ErrExists) {
		t.Fatalf("room %s (another shard) on r0's subject: %v, want exists", other, err)
	}
	if _, err := alice.DeleteRoom(ctx, "r0"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := alice.CreateRoom(ctx, other, "chat.r0", nil); err != nil {
		t.Fatalf("room %s on the subject of deleted r0: %v", other, err)
	}
	if page, err := bob.MyRooms(ctx, "", 100); err != nil || len(page.Rooms) != 7 {
		t.Fatalf("bob's rooms after r0 was deleted: %+v, %v", page, err)
	}
}

// TestShardsResend: the same signed mutation of a room in a room shard,
// sent twice, applies once and is answered "already applied" with the
// first reply the second time, on either replica.
func TestShardsResend(t *testing.T) {
	s, st, member := shardedDeployment(t, 4)
	alice, bob := member("alice"), member("bob")
	if _, _, err := alice.CreateRoom(natstest.Ctx(t, 1), "r1", "chat.r1", nil); err != nil {
		t.Fatal(err)
	}
	sealer, _ := alice.Identity().XKey.PublicKey()
	key, _, err := alice.Key(natstest.Ctx(t, 1), "r1", 0)
	if err != nil {
		t.Fatal(err)
	}
	bx, _ := bob.Identity().XKey.PublicKey()
	sealed, err := alice.Identity().XKey.Seal(key, bx)
	if err != nil {
		t.Fatal(err)
	}
	mutation := membertest.Signed(t, alice.Identity().Sign, subjects.OpRoomAdd, membertest.Body(t, api.AddMemberRequest{
		Room: "r1", Epoch: 1, Sealer: sealer, Member: api.SealedKey{Endpoint: "bob", Sealed: sealed}}))
	nc := natstest.Connect(t, s)
	first := membertest.RequestOp(t, nc, subjects.OpRoomAdd, mutation)
	first.Expect(t, 0, "")
	for i := 0; i < 4; i++ { // the queue group spreads the copies over both replicas
		r := membertest.RequestOp(t, nc, subjects.OpRoomAdd, mutation)
		r.Expect(t, subjects.CodeAlreadyApplied, api.KindAlreadyApplied.Reason())
	}
	nonces, err := st.Room("r1").Keys(natstest.Ctx(t, 1), "nonce.")
	if err != nil || len(nonces) != 2 {
		t.Fatalf("nonces in r1's shard: %v, %v; want the create's and the add's", nonces, err)
	}
	if base, _ := st.Base().Keys(natstest.Ctx(t, 1), "nonce."); len(base) != 2 {
		t.Fatalf("nonces in the base bucket: %v; want the two registrations'", base)
	}
}

// roomShardsInfo is the room_shards metadata a replica at url shows in its
// micro info ($SRV.INFO, what nats micro info reads).
func roomShardsInfo(t *testing.T, url string) string {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	msg, err := nc.Request("$SRV.INFO."+subjects.ServiceName, nil, natstest.Patience)
	if err != nil {
		t.Fatal(err)
	}
	var info micro.Info
	if err := json.Unmarshal(msg.Data, &info); err != nil {
		t.Fatal(err)
	}
	return info.Metadata["room_shards"]
}

// TestMembershipdShards: membershipd --shards 4 creates a deployment of
// four room shards; restarted with another count it refuses to start and
// names the count the deployment was created with; restarted without the
// flag it opens the deployment as created (micro info says room_shards 4).
// A deployment created with the default (one shard, the original layout)
// is refused with --shards 4 or 2, naming its one shard, and reopens with
// its room and nothing added without the flag, with --shards 0 and with
// --shards 1.
func TestMembershipdShards(t *testing.T) {
	bin := natstest.Build(t, membershipdPkg)
	refused := func(t *testing.T, data string, n, created int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), natstest.Within(3))
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "--data-dir", data, "--listen", "127.0.0.1:-1", "--shards", strconv.Itoa(n))
		cmd.Env = append(os.Environ(), "NATS_URL=", "NATS_CONTEXT=")
		out, err := cmd.CombinedOutput()
		want := fmt.Sprintf("created with %d room shard(s), configured %d", created, n)
		if err == nil || ctx.Err() != nil || !strings.Contains(string(out), want) {
			t.Fatalf("--shards %d on a deployment of %d: %v; want a refusal saying %q:\n%s", n, created, err, want, out)
		}
	}
	streams := func(t *testing.T, url string) []string {
		t.Helper()
		nc, err := nats.Connect(url)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		var names []string
		for name := range js.StreamNames(natstest.Ctx(t, 1)).Name() {
			if strings.HasPrefix(name, "KV_") {
				names = append(names, name)
			}
		}
		slices.Sort(names)
		return names
	}

	data := filepath.Join(t.TempDir(), "data")
	d := startDaemon(t, "--data-dir", data, "--listen", "127.0.0.1:-1", "--shards", "4")
	want := []string{"KV_membership", "KV_membership-rooms-0", "KV_membership-rooms-1", "KV_membership-rooms-2", "KV_membership-rooms-3"}
	if got := streams(t, d.url); !slices.Equal(got, want) {
		t.Fatalf("KV streams %v, want %v", got, want)
	}
	if got := roomShardsInfo(t, d.url); got != "4" {
		t.Fatalf("micro info metadata room_shards = %q, want 4", got)
	}
	d.stop(t)
	refused(t, data, 2, 4)
	d = startDaemon(t, "--data-dir", data, "--listen", "127.0.0.1:-1")
	whoami(t, d.url, filepath.Join(data, "admin.identity"))
	d.stop(t)

	// The one-shard layout (whose stream configuration is the one made
	// before shards existed: store's TestOneShardLayoutUnchanged): its room
	// survives every reopening that is not refused, and nothing is added.
	one := filepath.Join(t.TempDir(), "data")
	d = startDaemon(t, "--data-dir", one, "--listen", "127.0.0.1:-1")
	if got := streams(t, d.url); !slices.Equal(got, want[:1]) {
		t.Fatalf("default deployment's KV streams %v, want %v", got, want[:1])
	}
	adminRoom(t, d.url, filepath.Join(one, "admin.identity"), true)
	d.stop(t)
	refused(t, one, 4, 1)
	for _, flags := range [][]string{nil, {"--shards", "0"}, {"--shards", "1"}} {
		d = startDaemon(t, append([]string{"--data-dir", one, "--listen", "127.0.0.1:-1"}, flags...)...)
		adminRoom(t, d.url, filepath.Join(one, "admin.identity"), false)
		if got := streams(t, d.url); !slices.Equal(got, want[:1]) {
			t.Fatalf("one-shard deployment reopened with %v: KV streams %v, want %v", flags, got, want[:1])
		}
		if got := roomShardsInfo(t, d.url); got != "1" {
			t.Fatalf("one-shard deployment reopened with %v: micro info room_shards %q, want 1", flags, got)
		}
		d.stop(t)
	}
	refused(t, one, 2, 1)
}

// adminRoom creates (create) or reads the room "kept" as the admin of the
// deployment at url.
func adminRoom(t *testing.T, url, identityFile string, create bool) {
	t.Helper()
	id, err := identity.Load(identityFile)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := client.New(nc, id)
	if create {
		if _, _, err := c.CreateRoom(natstest.Ctx(t, 1), "kept", "chat.kept", nil); err != nil {
			t.Fatalf("create room kept: %v", err)
		}
		return
	}
	if r, err := c.Room(natstest.Ctx(t, 1), "kept"); err != nil || r.Owner != id.Endpoint {
		t.Fatalf("room kept after reopening: %+v, %v", r, err)
	}
}

// TestShardLeaders: three membershipd nodes started together with
// --shards 4 and R3 buckets create the room shards and spread their leaders
// over the nodes (store.SpreadLeaders): the commands docs/deploy.md gives
// ("Shards"), taken from the page, show it — nats stream report stars each
// shard's leader, and the four are led by all three nodes — and its
// step-down moves a shard to the node it names.
func TestShardLeaders(t *testing.T) {
	c := newCluster(t, 3, "--shards", "4")
	lines := strings.Split(strings.TrimSpace(fencedBlock(t, deployDoc, "text", "stream report")), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "step-down KV_membership-rooms-1 --preferred n2") {
		t.Fatalf("docs/deploy.md's leader commands changed: %q", lines)
	}
	report, stepDown := lines[0], lines[1]
	op := newOperatorShell(t)
	op.context(t, c.urls())
	nodes := map[string]bool{}
	for _, n := range c.nodes {
		nodes[n.name] = true
	}
	var leaders map[string]string // room shard stream → its leader
	natstest.Eventually(t, 6, "the room shards led by all three nodes", func() error {
		out := op.run(t, report)
		leaders = map[string]string{}
		led := map[string]int{}
		for i := range 4 {
			stream := "KV_" + subjects.RoomShardBucket(subjects.DefaultBucket, i)
			for n := range nodes {
				if row := reportRow(out, stream); strings.Contains(row, n+"*") {
					leaders[stream] = n
					led[n]++
				}
			}
			if leaders[stream] == "" {
				return fmt.Errorf("no starred leader in the report's row of %s:\n%s", stream, out)
			}
		}
		if len(led) != 3 {
			return fmt.Errorf("leaders %v", leaders)
		}
		return nil
	})
	if logs := c.logTails(); !strings.Contains(logs, "room shard leader moved") {
		t.Logf("no replica moved a leader (the elections spread them): %v", leaders)
	}

	// The step-down, with the shard and node of this cluster.
	stream := "KV_" + subjects.RoomShardBucket(subjects.DefaultBucket, 1)
	to := "n1"
	if leaders[stream] == to {
		to = "n2"
	}
	cmd := strings.NewReplacer("KV_membership-rooms-1", stream, "--preferred n2", "--preferred "+to).Replace(stepDown)
	op.run(t, cmd)
	natstest.Eventually(t, 3, stream+" led by "+to, func() error {
		if row := reportRow(op.run(t, report), stream); !strings.Contains(row, to+"*") {
			return fmt.Errorf("report row %q", row)
		}
		return nil
	})
}

// reportRow is the row of nats stream report's table that names stream.
func reportRow(report, stream string) string {
	for _, l := range strings.Split(report, "\n") {
		if strings.Contains(l, " "+stream+" ") {
			return l
		}
	}
	return ""
}

// TestShardsStaleSubjectClaim: with room shards a subject's claim in the
// base bucket that names a room which holds another subject is taken over
// at once; one that names a room that does not exist is refused while a
// copy of its create could still commit, and taken over once it is older
// than the nonce lifetime (docs/protocol.md §21).
func TestShardsStaleSubjectClaim(t *testing.T) {
	const skew = time.Second // nonce lifetime 2 s
	_, st, member := shardedDeploymentWith(t, 4, service.Config{Skew: skew})
	alice := member("alice")
	ctx := natstest.Ctx(t, 1)
	if _, _, err := alice.CreateRoom(ctx, "r1", "chat.r1", nil); err != nil {
		t.Fatal(err)
	}
	claim := func(subject, room string) {
		t.Helper()
		sum := sha256.Sum256([]byte(subject))
		key := "subject." + hex.EncodeToString(sum[:])
		e, err := st.Base().Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := msgpack.Marshal(room)
		if err := st.Base().Commit(ctx, []store.Write{{Key: key, Value: v, Rev: e.Rev}}); err != nil {
			t.Fatal(err)
		}
	}
	claim("chat.a", "r1") // r1 holds chat.r1: this claim can never commit its room
	if _, _, err := alice.CreateRoom(ctx, "a", "chat.a", nil); err != nil {
		t.Fatalf("create on a claim naming a room of another subject: %v", err)
	}
	claim("chat.b", "ghost") // no room ghost: its create may still be in flight
	if _, _, err := alice.CreateRoom(ctx, "b", "chat.b", nil); !errors.Is(err, client.ErrExists) {
		t.Fatalf("create on a young claim of a missing room: %v, want exists", err)
	}
	natstest.Eventually(t, 2, "the claim of a missing room goes stale", func() error {
		_, _, err := alice.CreateRoom(natstest.Ctx(t, 1), "b", "chat.b", nil)
		return err
	})
	if _, err := alice.Room(ctx, "b"); err != nil {
		t.Fatal(err)
	}
}
