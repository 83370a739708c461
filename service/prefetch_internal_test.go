package service

import (
	"context"
	"testing"

	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/store"
	"github.com/unibus/membership/subjects"
)

// TestPrefetchAnsweredOnce: a plan's read of a prefetched key takes the
// read sent at prefetch time, once; the next read of that key (a re-plan's)
// reads the store again, and a key that was not prefetched is read as
// before. It runs on four room shards, so the room's key is read from its
// own shard.
func TestPrefetchAnsweredOnce(t *testing.T) {
	nc := natstest.Connect(t, natstest.Server(t))
	ctx, cancel := context.WithTimeout(context.Background(), natstest.Patience)
	defer cancel()
	st, err := store.Open(ctx, natstest.JetStream(t, nc), store.Config{Bucket: subjects.DefaultBucket,
		KeysBucket: subjects.DefaultKeysBucket, MaxTTL: NonceTTL(DefaultSkew), NewShards: 4})
	if err != nil {
		t.Fatal(err)
	}
	s := &Service{store: st, stats: newStats(nil)}
	key, other := keyRoom("r1"), keyMember("r1", "e1")
	write := func(k, v string) {
		t.Helper()
		ent, err := st.Room("r1").Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Room("r1").Commit(ctx, []store.Write{put(k, ent.Rev, v)}); err != nil {
			t.Fatal(err)
		}
	}
	write(key, "before")
	c := &call{op: subjects.OpRoomAdd, mutates: true}
	s.prefetch(ctx, c, key)
	// Wait until the prefetched read has its answer, then change the key.
	ch := c.pre.take(key)
	f := <-ch
	ch <- f
	c.pre.m[key] = ch
	write(key, "after")
	write(other, "member")
	want := []struct{ key, value string }{{key, "before"}, {key, "after"}, {other, "member"}}
	for i, w := range want {
		var v string
		if _, ok, err := s.get(ctx, c, w.key, &v); err != nil || !ok || v != w.value {
			t.Fatalf("read %d of %s = %q, %v, %v; want %q", i+1, w.key, v, ok, err, w.value)
		}
	}
	if got, want := c.shard.Load(), st.Room("r1"); got != want {
		t.Fatalf("the call's shard is %v, want the room's %v", got.Name(), want.Name())
	}
}
