package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/store"
)

const (
	bucket     = "t-state"
	keysBucket = "t-keys"
)

func testConfig() store.Config {
	return store.Config{Bucket: bucket, KeysBucket: keysBucket, MaxTTL: 2 * time.Second}
}

// open starts a server and opens a store on it.
func open(t *testing.T) (*store.Store, jetstream.JetStream, *server.Server, *nats.Conn) {
	t.Helper()
	s := natstest.Server(t)
	nc := natstest.Connect(t, s)
	js := natstest.JetStream(t, nc)
	st, err := store.Open(natstest.Ctx(t, 1), js, testConfig())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return st, js, s, nc
}

func mustGet(t *testing.T, st *store.Store, key string) store.Entry {
	t.Helper()
	e, err := st.Get(natstest.Ctx(t, 1), key)
	if err != nil {
		t.Fatalf("Get(%s): %v", key, err)
	}
	return e
}

func mustCommit(t *testing.T, st *store.Store, writes ...store.Write) {
	t.Helper()
	if err := st.Commit(natstest.Ctx(t, 1), writes); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

func TestOpen(t *testing.T) {
	st, js, _, _ := open(t)
	ctx := natstest.Ctx(t, 1)
	mustCommit(t, st, store.Write{Key: "k", Value: []byte("v")})

	t.Run("stream config", func(t *testing.T) {
		stream, err := js.Stream(ctx, "KV_"+bucket)
		if err != nil {
			t.Fatal(err)
		}
		cfg := stream.CachedInfo().Config
		if !cfg.AllowAtomicPublish || !cfg.AllowMsgTTL || !cfg.AllowDirect {
			t.Fatalf("AllowAtomicPublish=%v AllowMsgTTL=%v AllowDirect=%v, want true true true (one replica: direct gets)",
				cfg.AllowAtomicPublish, cfg.AllowMsgTTL, cfg.AllowDirect)
		}
		if cfg.Replicas != 1 {
			t.Fatalf("replicas = %d", cfg.Replicas)
		}
	})

	t.Run("idempotent", func(t *testing.T) {
		st2, err := store.Open(ctx, js, testConfig())
		if err != nil {
			t.Fatalf("second Open: %v", err)
		}
		if e := mustGet(t, st2, "k"); string(e.Value) != "v" {
			t.Fatalf("second store reads %q, want the first store's value", e.Value)
		}
		stream, err := js.Stream(ctx, "KV_"+bucket)
		if err != nil {
			t.Fatal(err)
		}
		if cfg := stream.CachedInfo().Config; !cfg.AllowAtomicPublish || !cfg.AllowMsgTTL || !cfg.AllowDirect {
			t.Fatalf("after second Open: %+v", cfg)
		}
	})

	t.Run("repairs a bucket without atomic batches", func(t *testing.T) {
		stream, err := js.Stream(ctx, "KV_"+bucket)
		if err != nil {
			t.Fatal(err)
		}
		cfg := stream.CachedInfo().Config
		cfg.AllowDirect = false // wrong for one replica
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		st3, err := store.Open(ctx, js, testConfig())
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		stream, _ = js.Stream(ctx, "KV_"+bucket)
		if cfg := stream.CachedInfo().Config; !cfg.AllowAtomicPublish || !cfg.AllowMsgTTL || !cfg.AllowDirect {
			t.Fatalf("after reopen: AllowAtomicPublish=%v AllowMsgTTL=%v AllowDirect=%v",
				cfg.AllowAtomicPublish, cfg.AllowMsgTTL, cfg.AllowDirect)
		}
		mustCommit(t, st3, store.Write{Key: "k2", Value: []byte("v")})
	})

	shapes := []struct {
		name string
		cfg  func(*store.Config)
	}{
		{"other replica count", func(c *store.Config) { c.Replicas = 3 }},
		{"other storage", func(c *store.Config) { c.Storage = jetstream.MemoryStorage }},
		{"other storage for the object store only", func(c *store.Config) {
			c.Bucket, c.KeysBucket, c.Storage = "t-state-mem", keysBucket, jetstream.MemoryStorage
		}},
	}
	for _, tt := range shapes {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			tt.cfg(&cfg)
			if _, err := store.Open(ctx, js, cfg); !errors.Is(err, store.ErrBucketConfig) {
				t.Fatalf("Open = %v, want ErrBucketConfig", err)
			}
			for _, name := range []string{"KV_" + bucket, "OBJ_" + keysBucket} {
				stream, err := js.Stream(ctx, name)
				if err != nil {
					t.Fatal(err)
				}
				if c := stream.CachedInfo().Config; c.Replicas != 1 || c.Storage != jetstream.FileStorage {
					t.Fatalf("%s changed: replicas %d storage %s", name, c.Replicas, c.Storage)
				}
			}
			if e := mustGet(t, st, "k"); string(e.Value) != "v" {
				t.Fatalf("value after refused Open = %q", e.Value)
			}
		})
	}
}

func TestGet(t *testing.T) {
	st, _, _, _ := open(t)
	ctx := natstest.Ctx(t, 1)
	mustCommit(t, st, store.Write{Key: "present", Value: []byte("v1")}, store.Write{Key: "empty", Value: []byte{}},
		store.Write{Key: "deleted", Value: []byte("x")})
	present := mustGet(t, st, "present")
	old := mustGet(t, st, "deleted")
	if err := st.Delete(ctx, "deleted"); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		key    string
		exists bool
		value  []byte
		rev    func(store.Entry) bool
	}{
		{"missing", false, nil, func(e store.Entry) bool { return e.Rev == 0 }},
		{"present", true, []byte("v1"), func(e store.Entry) bool { return e.Rev > 0 }},
		{"empty", true, []byte{}, func(e store.Entry) bool { return e.Rev > 0 }},
		// A deleted key has no value but the revision of its delete
		// marker, so a batch can compare against it.
		{"deleted", false, nil, func(e store.Entry) bool { return e.Rev > old.Rev }},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			e := mustGet(t, st, tt.key)
			if e.Exists() != tt.exists {
				t.Fatalf("Exists = %v, want %v (%+v)", e.Exists(), tt.exists, e)
			}
			if !bytes.Equal(e.Value, tt.value) || (tt.value == nil) != (e.Value == nil) {
				t.Fatalf("Value = %q (nil %v), want %q", e.Value, e.Value == nil, tt.value)
			}
			if !tt.rev(e) {
				t.Fatalf("Rev = %d unexpected", e.Rev)
			}
		})
	}

	t.Run("rev moves with each write", func(t *testing.T) {
		mustCommit(t, st, store.Write{Key: "present", Value: []byte("v2"), Rev: present.Rev})
		e := mustGet(t, st, "present")
		if e.Rev <= present.Rev || string(e.Value) != "v2" {
			t.Fatalf("after update: %+v, before rev %d", e, present.Rev)
		}
	})

	t.Run("recreate over delete marker", func(t *testing.T) {
		marker := mustGet(t, st, "deleted")
		// Rev 0 no longer matches: the marker is the key's last message.
		if err := st.Commit(ctx, []store.Write{{Key: "deleted", Value: []byte("y")}}); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("Commit rev 0 over marker = %v, want ErrConflict", err)
		}
		mustCommit(t, st, store.Write{Key: "deleted", Value: []byte("y"), Rev: marker.Rev})
		if e := mustGet(t, st, "deleted"); string(e.Value) != "y" {
			t.Fatalf("after recreate: %+v", e)
		}
	})
}

func TestCreate(t *testing.T) {
	t.Parallel() // waits on TTLs or timeouts
	st, _, _, _ := open(t)
	ctx := natstest.Ctx(t, 1)

	t.Run("second create exists", func(t *testing.T) {
		if err := st.Create(ctx, "c1", []byte("a"), 0); err != nil {
			t.Fatalf("first Create: %v", err)
		}
		if err := st.Create(ctx, "c1", []byte("b"), 0); !errors.Is(err, store.ErrExists) {
			t.Fatalf("second Create = %v, want ErrExists", err)
		}
		if e := mustGet(t, st, "c1"); string(e.Value) != "a" {
			t.Fatalf("value = %q, want the first writer's", e.Value)
		}
	})

	t.Run("concurrent creates: one winner", func(t *testing.T) {
		const n = 8
		errs := make(chan error, n)
		for i := range n {
			go func() { errs <- st.Create(ctx, "race", []byte{byte(i)}, 0) }()
		}
		wins := 0
		for range n {
			switch err := <-errs; {
			case err == nil:
				wins++
			case errors.Is(err, store.ErrExists):
			default:
				t.Errorf("Create: %v", err)
			}
		}
		if wins != 1 {
			t.Fatalf("%d creates won, want 1", wins)
		}
	})

	t.Run("ttl expires", func(t *testing.T) {
		if err := st.Create(ctx, "nonce.x", []byte("n"), time.Second); err != nil {
			t.Fatalf("Create with TTL: %v", err)
		}
		if err := st.Create(ctx, "nonce.x", []byte("n"), time.Second); !errors.Is(err, store.ErrExists) {
			t.Fatalf("Create before expiry = %v, want ErrExists", err)
		}
		waitGone(t, st, "nonce.x")
		if err := st.Create(ctx, "nonce.x", []byte("n"), time.Second); err != nil {
			t.Fatalf("Create after expiry: %v", err)
		}
	})
}

// waitGone polls until key holds no value; TTLs are at least 1s.
func waitGone(t *testing.T, st *store.Store, key string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		e := mustGet(t, st, key)
		if !e.Exists() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still holds %q after its TTL", key, e.Value)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestCommit(t *testing.T) {
	t.Parallel() // waits on TTLs or timeouts
	st, _, _, _ := open(t)
	ctx := natstest.Ctx(t, 1)
	mustCommit(t, st,
		store.Write{Key: "a", Value: []byte("a1")},
		store.Write{Key: "b", Value: []byte("b1")},
		store.Write{Key: "gone", Value: []byte("g1")})
	a, b, gone := mustGet(t, st, "a"), mustGet(t, st, "b"), mustGet(t, st, "gone")

	conflicts := []struct {
		name   string
		writes []store.Write
	}{
		{"one stale revision", []store.Write{
			{Key: "n1", Value: []byte("nonce"), TTL: time.Minute},
			{Key: "a", Value: []byte("a2"), Rev: a.Rev},
			{Key: "b", Value: []byte("b2"), Rev: b.Rev - 1},
			{Key: "c", Value: []byte("c1")},
		}},
		{"create over an existing key", []store.Write{
			{Key: "n1", Value: []byte("nonce"), TTL: time.Minute},
			{Key: "c", Value: []byte("c1")},
			{Key: "a", Value: []byte("a2")},
		}},
		{"stale delete", []store.Write{
			{Key: "n1", Value: []byte("nonce")},
			{Key: "gone", Delete: true, Rev: gone.Rev + 100},
			{Key: "a", Value: []byte("a2"), Rev: a.Rev},
		}},
		{"rev for a missing key", []store.Write{
			{Key: "n1", Value: []byte("nonce")},
			{Key: "c", Value: []byte("c1"), Rev: a.Rev},
		}},
	}
	for _, tt := range conflicts {
		t.Run(tt.name, func(t *testing.T) {
			if err := st.Commit(ctx, tt.writes); !errors.Is(err, store.ErrConflict) {
				t.Fatalf("Commit = %v, want ErrConflict", err)
			}
			// Nothing of the batch was written.
			for _, k := range []struct {
				key  string
				want store.Entry
			}{{"a", a}, {"b", b}, {"gone", gone}, {"c", store.Entry{}}, {"n1", store.Entry{}}} {
				got := mustGet(t, st, k.key)
				if got.Rev != k.want.Rev || !bytes.Equal(got.Value, k.want.Value) {
					t.Errorf("%s = %+v, want %+v", k.key, got, k.want)
				}
			}
		})
	}

	t.Run("all writes applied", func(t *testing.T) {
		mustCommit(t, st,
			store.Write{Key: "n2", Value: []byte("nonce"), TTL: time.Minute},
			store.Write{Key: "a", Value: []byte("a2"), Rev: a.Rev},
			store.Write{Key: "b", Value: []byte("b2"), Rev: b.Rev},
			store.Write{Key: "gone", Delete: true, Rev: gone.Rev},
			store.Write{Key: "c", Value: []byte("c1")})
		for key, want := range map[string]string{"n2": "nonce", "a": "a2", "b": "b2", "c": "c1"} {
			if e := mustGet(t, st, key); string(e.Value) != want {
				t.Errorf("%s = %q, want %q", key, e.Value, want)
			}
		}
		e := mustGet(t, st, "gone")
		if e.Exists() || e.Rev <= gone.Rev {
			t.Errorf("deleted key = %+v, want a delete marker after rev %d", e, gone.Rev)
		}
		keys, err := st.Keys(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(keys, "gone") {
			t.Errorf("Keys lists the deleted key: %v", keys)
		}
	})

	t.Run("replayed nonce conflicts", func(t *testing.T) {
		e := mustGet(t, st, "a")
		err := st.Commit(ctx, []store.Write{
			{Key: "n2", Value: []byte("again"), TTL: time.Minute},
			{Key: "a", Value: []byte("a3"), Rev: e.Rev},
		})
		if !errors.Is(err, store.ErrConflict) {
			t.Fatalf("Commit = %v, want ErrConflict", err)
		}
		if got := mustGet(t, st, "a"); got.Rev != e.Rev {
			t.Fatalf("a moved to %+v", got)
		}
	})

	t.Run("nonce ttl expires", func(t *testing.T) {
		mustCommit(t, st,
			store.Write{Key: "n3", Value: []byte("nonce"), TTL: time.Second},
			store.Write{Key: "d", Value: []byte("d1")})
		waitGone(t, st, "n3")
		if e := mustGet(t, st, "d"); string(e.Value) != "d1" {
			t.Fatalf("key without TTL = %+v after the nonce expired", e)
		}
	})
}

func TestKeys(t *testing.T) {
	st, _, _, _ := open(t)
	ctx := natstest.Ctx(t, 1)
	mustCommit(t, st,
		store.Write{Key: "member.r1.alice", Value: []byte{1}},
		store.Write{Key: "member.r1.bob", Value: []byte{1}},
		store.Write{Key: "member.r1.carol", Value: []byte{1}},
		store.Write{Key: "member.r10.dave", Value: []byte{1}},
		store.Write{Key: "member.r2.erin", Value: []byte{1}},
		store.Write{Key: "room.r1", Value: []byte{1}})
	bob := mustGet(t, st, "member.r1.bob")
	mustCommit(t, st, store.Write{Key: "member.r1.bob", Delete: true, Rev: bob.Rev})
	if err := st.Delete(ctx, "member.r1.carol"); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		prefix string
		want   []string
	}{
		{"member.r1.", []string{"member.r1.alice"}},
		{"member.r10.", []string{"member.r10.dave"}},
		{"member.", []string{"member.r1.alice", "member.r10.dave", "member.r2.erin"}},
		{"member.r3.", nil},
		{"nothing.", nil},
	}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			got, err := st.Keys(ctx, tt.prefix)
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("Keys(%q) = %v, want %v", tt.prefix, got, tt.want)
			}
		})
	}
}

func TestObjects(t *testing.T) {
	st, _, _, _ := open(t)
	ctx := natstest.Ctx(t, 1)

	if names, err := st.ListObjects(ctx, ""); err != nil || len(names) != 0 {
		t.Fatalf("ListObjects on empty store = %v, %v", names, err)
	}
	if _, err := st.GetObject(ctx, "r1/1/none"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetObject(missing) = %v, want ErrNotFound", err)
	}
	if err := st.DeleteObject(ctx, "r1/1/none"); err != nil {
		t.Fatalf("DeleteObject(missing) = %v, want nil", err)
	}
	objs := map[string][]byte{
		"r1/1/bundle-aa":  []byte("one"),
		"r1/2/bundle-bb":  []byte("two"),
		"r10/1/bundle-cc": []byte("ten"),
		"r2/1/add-x-dd":   bytes.Repeat([]byte{7}, 300),
	}
	for name, data := range objs {
		if err := st.PutObject(ctx, name, data); err != nil {
			t.Fatalf("PutObject(%s): %v", name, err)
		}
	}
	for name, data := range objs {
		got, err := st.GetObject(ctx, name)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("GetObject(%s) = %q, %v; want %q", name, got, err, data)
		}
	}
	list := func(prefix string) []string {
		t.Helper()
		names, err := st.ListObjects(ctx, prefix)
		if err != nil {
			t.Fatalf("ListObjects(%q): %v", prefix, err)
		}
		slices.Sort(names)
		return names
	}
	if got, want := list("r1/"), []string{"r1/1/bundle-aa", "r1/2/bundle-bb"}; !slices.Equal(got, want) {
		t.Fatalf("ListObjects(r1/) = %v, want %v", got, want)
	}
	if got := list(""); len(got) != len(objs) {
		t.Fatalf("ListObjects() = %v", got)
	}
	if err := st.DeleteObject(ctx, "r1/1/bundle-aa"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetObject(ctx, "r1/1/bundle-aa"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetObject(deleted) = %v, want ErrNotFound", err)
	}
	if got, want := list("r1/"), []string{"r1/2/bundle-bb"}; !slices.Equal(got, want) {
		t.Fatalf("ListObjects(r1/) after delete = %v, want %v", got, want)
	}
}

// TestPutObjectImmutable: putting an existing object again leaves it as it
// is (names carry the digest of their content's request), and a deleted
// one can be written anew.
func TestPutObjectImmutable(t *testing.T) {
	st, _, _, _ := open(t)
	ctx := natstest.Ctx(t, 1)
	if err := st.PutObject(ctx, "r1/k", []byte("first")); err != nil {
		t.Fatal(err)
	}
	if err := st.PutObject(ctx, "r1/k", []byte("second")); err != nil {
		t.Fatal(err)
	}
	if b, err := st.GetObject(ctx, "r1/k"); err != nil || string(b) != "first" {
		t.Fatalf("GetObject = %q, %v; want the first bytes", b, err)
	}
	if err := st.DeleteObject(ctx, "r1/k"); err != nil {
		t.Fatal(err)
	}
	if err := st.PutObject(ctx, "r1/k", []byte("again")); err != nil {
		t.Fatal(err)
	}
	if b, err := st.GetObject(ctx, "r1/k"); err != nil || string(b) != "again" {
		t.Fatalf("GetObject after delete and put = %q, %v", b, err)
	}
}

// TestPutObjectChunks: a new object of one chunk is written as nats.go's
// object store writes it (its own reader checks size, chunk count and
// digest), a put refused because the name is taken leaves no chunk behind
// in the stream, and an object larger than one chunk takes nats.go's Put.
func TestPutObjectChunks(t *testing.T) {
	st, js, _, _ := open(t)
	ctx := natstest.Ctx(t, 1)
	small, big := []byte("sealed key"), make([]byte, 300<<10)
	for i := range big {
		big[i] = byte(i)
	}
	for _, o := range []struct {
		name string
		data []byte
	}{{"r1/small", small}, {"r1/big", big}} {
		if err := st.PutObject(ctx, o.name, o.data); err != nil {
			t.Fatalf("PutObject(%s): %v", o.name, err)
		}
		if b, err := st.GetObject(ctx, o.name); err != nil || !bytes.Equal(b, o.data) {
			t.Fatalf("GetObject(%s) = %d bytes, %v; want %d", o.name, len(b), err, len(o.data))
		}
	}
	obs, err := js.ObjectStore(ctx, keysBucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := obs.GetInfo(ctx, "r1/small")
	if err != nil || info.Size != uint64(len(small)) || info.Chunks != 1 || info.Opts == nil || info.Opts.ChunkSize != 128<<10 {
		t.Fatalf("GetInfo(r1/small) = %+v, %v", info, err)
	}
	stream, err := js.Stream(ctx, "OBJ_"+keysBucket)
	if err != nil {
		t.Fatal(err)
	}
	msgs := func() uint64 {
		si, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return si.State.Msgs
	}
	before := msgs()
	if err := st.PutObject(ctx, "r1/small", []byte("other")); err != nil {
		t.Fatal(err)
	}
	if after := msgs(); after != before {
		t.Fatalf("the object stream holds %d messages after a put of a taken name, %d before", after, before)
	}
}

// TestUnavailable checks that a store that cannot be reached never answers
// with the errors that mean "decided": a caller must fail closed.
func TestUnavailable(t *testing.T) {
	t.Parallel() // waits on TTLs or timeouts
	decided := []error{store.ErrConflict, store.ErrExists, store.ErrNotFound}
	check := func(t *testing.T, what string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s succeeded without a store", what)
			return
		}
		for _, d := range decided {
			if errors.Is(err, d) {
				t.Errorf("%s = %v, must not be %v", what, err, d)
			}
		}
	}
	run := func(t *testing.T, st *store.Store) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := st.Get(ctx, "missing")
		check(t, "Get", err)
		check(t, "Create", st.Create(ctx, "k", []byte("v"), time.Second))
		check(t, "Commit", st.Commit(ctx, []store.Write{{Key: "k", Value: []byte("v")}}))
		_, err = st.Keys(ctx, "member.")
		check(t, "Keys", err)
		check(t, "Delete", st.Delete(ctx, "k"))
		check(t, "PutObject", st.PutObject(ctx, "o", []byte("x")))
		_, err = st.GetObject(ctx, "o")
		check(t, "GetObject", err)
		_, err = st.ListObjects(ctx, "")
		check(t, "ListObjects", err)
	}

	t.Run("connection closed", func(t *testing.T) {
		st, _, _, nc := open(t)
		nc.Close()
		run(t, st)
	})
	t.Run("server down", func(t *testing.T) {
		st, _, s, _ := open(t)
		s.Shutdown()
		s.WaitForShutdown()
		run(t, st)
	})
}

// TestReopenKeepsBatches opens the store again (a replica restarting)
// while another replica commits: the bucket must never lose atomic batches
// on the way, or those commits fail. (Updating an existing bucket through
// the KV API did exactly that: it turned atomic publish off until Open
// turned it on again.)
func TestReopenKeepsBatches(t *testing.T) {
	s := natstest.Server(t)
	cfg := testConfig()
	cfg.Storage = jetstream.MemoryStorage // fast commits: many land in any window
	js := func() jetstream.JetStream {
		js := natstest.JetStream(t, natstest.Connect(t, s))
		return js
	}
	ctx := natstest.Ctx(t, 1)
	st, err := store.Open(ctx, js(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var commits atomic.Int64
	errs := make(chan error, 4)
	for w := range 4 {
		key := fmt.Sprintf("counter%d", w)
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				e, err := st.Get(ctx, key)
				if err == nil {
					err = st.Commit(ctx, []store.Write{{Key: key, Value: []byte("v"), Rev: e.Rev}})
				}
				if err != nil {
					errs <- err
					return
				}
				commits.Add(1)
			}
		})
	}
	reopen := js()
	for range 100 {
		if _, err := store.Open(ctx, reopen, cfg); err != nil {
			t.Fatalf("Open: %v", err)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	t.Logf("%d commits while reopening", commits.Load())
	for err := range errs {
		t.Fatalf("commit while another replica opened the store: %v", err)
	}
	stream, err := reopen.Stream(ctx, "KV_"+bucket)
	if err != nil {
		t.Fatal(err)
	}
	if c := stream.CachedInfo().Config; !c.AllowAtomicPublish || !c.AllowMsgTTL || !c.AllowDirect {
		t.Fatalf("after reopening: AllowAtomicPublish=%v AllowMsgTTL=%v AllowDirect=%v", c.AllowAtomicPublish, c.AllowMsgTTL, c.AllowDirect)
	}
}

// TestNewestSeqSkipsExpired: once a shard's last messages have expired (a
// TTL'd key, then the delete marker the server writes for it), LastSeq
// still names the gone message but NewestSeq names the newest one still
// there: the one a watch of the shard ends on.
func TestNewestSeqSkipsExpired(t *testing.T) {
	st, _, _, _ := open(t) // MaxTTL 2 s: markers expire too
	ctx := natstest.Ctx(t, 2)
	mustCommit(t, st, store.Write{Key: "room.kept", Value: []byte("r")})
	kept := mustGet(t, st, "room.kept").Rev
	if err := st.Create(ctx, "nonce.gone", []byte("n"), time.Second); err != nil {
		t.Fatal(err)
	}
	if n, err := st.NewestSeq(ctx); err != nil || n != kept+1 {
		t.Fatalf("NewestSeq before expiry = %d, %v; want %d", n, err, kept+1)
	}
	natstest.Eventually(t, 4, "the TTL'd key and its marker expire", func() error {
		n, err := st.NewestSeq(ctx)
		if err == nil && n != kept {
			err = fmt.Errorf("NewestSeq %d, want %d", n, kept)
		}
		return err
	})
	if last, err := st.LastSeq(ctx); err != nil || last <= kept {
		t.Fatalf("LastSeq = %d, %v: want the expired messages' %d or later", last, err, kept+1)
	}
	seqs, err := st.NewestSeqs(ctx)
	if err != nil || seqs[0] != kept {
		t.Fatalf("NewestSeqs = %v, %v; want %d for the base shard", seqs, err, kept)
	}
}
