package store_test

import (
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/store"
	"github.com/unibus/membership/subjects"
)

// TestRoomShardVectors: the room → shard function matches the vectors in
// testdata, computed by another implementation (Python's hashlib).
func TestRoomShardVectors(t *testing.T) {
	b, err := os.ReadFile("testdata/room-shards.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Vectors []struct {
			Room   string `json:"room"`
			Shards int    `json:"shards"`
			Shard  int    `json:"shard"`
		} `json:"vectors"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Vectors) == 0 {
		t.Fatal("no vectors")
	}
	for _, v := range doc.Vectors {
		if got := store.RoomShard(v.Room, v.Shards); got != v.Shard {
			t.Errorf("RoomShard(%q, %d) = %d, want %d", v.Room, v.Shards, got, v.Shard)
		}
	}
}

// TestShardLayout: a deployment created with 4 room shards has the base
// bucket (recording the count) and four room buckets; reopening it with
// count 0 finds 4, with any other count is refused with ErrBucketConfig.
// Rooms go to the shard RoomShard names, and a mutation's nonce commits
// there with the room in one batch.
func TestShardLayout(t *testing.T) {
	_, js, _, _ := open(t)
	ctx := natstest.Ctx(t, 1)
	cfg := testConfig()
	cfg.Bucket, cfg.Shards = "t-sharded", 4
	st, err := store.Open(ctx, js, cfg)
	if err != nil {
		t.Fatalf("Open with 4 shards: %v", err)
	}
	if st.RoomShards() != 4 || len(st.Shards()) != 5 {
		t.Fatalf("RoomShards=%d Shards=%d, want 4 and 5", st.RoomShards(), len(st.Shards()))
	}
	for i, sh := range st.Shards() {
		want := cfg.Bucket
		if i > 0 {
			want = subjects.RoomShardBucket(cfg.Bucket, i-1)
		}
		if sh.Name() != want || sh.ID() != i {
			t.Fatalf("shard %d: %s id %d, want %s", i, sh.Name(), sh.ID(), want)
		}
		if _, err := js.Stream(ctx, "KV_"+want); err != nil {
			t.Fatalf("stream of %s: %v", want, err)
		}
	}
	base, _ := js.Stream(ctx, "KV_"+cfg.Bucket)
	if got := base.CachedInfo().Config.Metadata[store.MetaRoomShards]; got != "4" {
		t.Fatalf("base metadata %s = %q, want 4", store.MetaRoomShards, got)
	}

	room := "room1"
	sh := st.Room(room)
	if want := st.Shards()[1+store.RoomShard(room, 4)]; sh != want {
		t.Fatalf("Room(%s) = %s, want %s", room, sh.Name(), want.Name())
	}
	if err := sh.Commit(ctx, []store.Write{
		{Key: "nonce.U1.abc", Value: []byte("n"), TTL: time.Minute},
		{Key: "room." + room, Value: []byte("r")},
	}); err != nil {
		t.Fatalf("commit in the room's shard: %v", err)
	}
	for _, other := range st.Shards() {
		e, err := other.Get(ctx, "room."+room)
		if err != nil {
			t.Fatal(err)
		}
		if e.Exists() != (other == sh) {
			t.Fatalf("room key in %s: %v (room shard %s)", other.Name(), e.Exists(), sh.Name())
		}
	}

	seqs, err := st.NewestSeqs(ctx)
	if err != nil || len(seqs) != 5 {
		t.Fatalf("NewestSeqs = %v, %v", seqs, err)
	}
	for i, sh := range st.Shards() {
		if want, _ := sh.LastSeq(ctx); seqs[i] != want {
			t.Fatalf("NewestSeqs[%d] = %d, shard %s's LastSeq %d (nothing has expired)", i, seqs[i], sh.Name(), want)
		}
	}
	if seqs[sh.ID()] == 0 {
		t.Fatal("the room's shard has no revision after a commit")
	}

	reopened, err := store.Open(ctx, js, store.Config{Bucket: cfg.Bucket, KeysBucket: cfg.KeysBucket, MaxTTL: cfg.MaxTTL})
	if err != nil {
		t.Fatalf("reopen with count 0: %v", err)
	}
	if reopened.RoomShards() != 4 {
		t.Fatalf("reopened with %d shards, want the 4 it was created with", reopened.RoomShards())
	}
	if e, err := reopened.Room(room).Get(ctx, "room."+room); err != nil || string(e.Value) != "r" {
		t.Fatalf("reopened store reads %q, %v", e.Value, err)
	}
	for _, n := range []int{1, 2, 8} {
		c := cfg
		c.Shards = n
		_, err := store.Open(ctx, js, c)
		if !errors.Is(err, store.ErrBucketConfig) || !strings.Contains(err.Error(), "created with 4 room shard(s)") {
			t.Fatalf("reopen with %d shards: %v, want ErrBucketConfig naming the 4 it was created with", n, err)
		}
	}
	c := cfg
	c.Shards = store.MaxShards + 1
	if _, err := store.Open(ctx, js, c); !errors.Is(err, store.ErrBucketConfig) {
		t.Fatalf("Open with %d shards: %v, want ErrBucketConfig", c.Shards, err)
	}
}

// TestOneShardLayoutUnchanged: a bucket created the way the store created it
// before shards existed opens as a one-shard deployment, its keys where
// they were, and refuses another count; a new one-shard deployment's
// stream is configured exactly as that older one (no metadata added, no
// other bucket created).
func TestOneShardLayoutUnchanged(t *testing.T) {
	_, js, _, _ := open(t)
	ctx := natstest.Ctx(t, 1)
	// The store's creation before shards (git 6780c57, store.Open).
	legacy := func(bucket string) jetstream.StreamConfig {
		t.Helper()
		if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: bucket, Description: "unibus membership: state and request nonces",
			History: 1, Replicas: 1, LimitMarkerTTL: 2 * time.Second,
		}); err != nil {
			t.Fatal(err)
		}
		s, err := js.Stream(ctx, "KV_"+bucket)
		if err != nil {
			t.Fatal(err)
		}
		sc := s.CachedInfo().Config
		sc.AllowAtomicPublish, sc.AllowMsgTTL, sc.AllowDirect = true, true, true
		if s, err = js.UpdateStream(ctx, sc); err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().Config
	}
	old := legacy("t-legacy")
	kv, _ := js.KeyValue(ctx, "t-legacy")
	if _, err := kv.Put(ctx, "room.r", []byte("old")); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.Bucket = "t-legacy"
	st, err := store.Open(ctx, js, cfg)
	if err != nil {
		t.Fatalf("open the older deployment: %v", err)
	}
	if st.RoomShards() != 1 || len(st.Shards()) != 1 || st.Room("r") != st.Base() {
		t.Fatalf("older deployment opened with %d room shards, %d buckets", st.RoomShards(), len(st.Shards()))
	}
	if e, err := st.Room("r").Get(ctx, "room.r"); err != nil || string(e.Value) != "old" {
		t.Fatalf("room.r = %q, %v", e.Value, err)
	}
	cfg.Shards = 4
	if _, err := store.Open(ctx, js, cfg); !errors.Is(err, store.ErrBucketConfig) {
		t.Fatalf("older deployment opened with 4 shards: %v, want ErrBucketConfig", err)
	}
	if _, err := js.Stream(ctx, "KV_"+subjects.RoomShardBucket(cfg.Bucket, 0)); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("a refused open created a room shard: %v", err)
	}

	cfg.Bucket, cfg.Shards, cfg.NewShards = "t-newdefault", 0, 4
	if st, err := store.Open(ctx, js, cfg); err != nil || st.RoomShards() != 4 {
		t.Fatalf("new deployment with NewShards 4: %v", err)
	}
	cfg.Bucket = "t-legacy"
	if st, err := store.Open(ctx, js, cfg); err != nil || st.RoomShards() != 1 {
		t.Fatalf("older deployment with NewShards 4 and Shards 0: %v, want it opened with its one shard", err)
	}

	cfg.Bucket, cfg.Shards, cfg.NewShards = "t-new-one", 1, 0
	if _, err := store.Open(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	s, _ := js.Stream(ctx, "KV_t-new-one")
	got := s.CachedInfo().Config
	want := legacy("t-compare")
	for _, sc := range []*jetstream.StreamConfig{&got, &want, &old} {
		sc.Name, sc.Subjects = "", nil
	}
	if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(old, want) {
		t.Fatalf("one-shard stream config\n got %+v\nwant %+v", got, want)
	}
}
