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
// before. So for keys prefetched together in one store request
// (prefetchJoint, a room read's). It runs on four room shards, so the
// room's keys are read from its own shard.
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
	for _, tc := range []struct {
		name     string
		prefetch func(context.Context, *call, ...string)
		keys     []string // prefetched
		other    string   // not prefetched
	}{
		{"one request a key", s.prefetch, []string{keyRoom("r1")}, keyMember("r1", "e1")},
		{"one request", s.prefetchJoint, []string{keyRoom("r1"), keyMember("r1", "e2")}, keyMember("r1", "e3")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range tc.keys {
				write(k, "before")
			}
			c := &call{op: subjects.OpRoomAdd, mutates: true}
			tc.prefetch(ctx, c, tc.keys...)
			// Wait until the prefetched reads have their answers, then
			// change the keys.
			for _, k := range tc.keys {
				ch := c.pre.take(k)
				f := <-ch
				ch <- f
				c.pre.m[k] = ch
				write(k, "after")
			}
			write(tc.other, "member")
			var want []struct{ key, value string }
			for _, k := range tc.keys {
				want = append(want, struct{ key, value string }{k, "before"}, struct{ key, value string }{k, "after"})
			}
			want = append(want, struct{ key, value string }{tc.other, "member"})
			for i, w := range want {
				var v string
				if _, ok, err := s.get(ctx, c, w.key, &v); err != nil || !ok || v != w.value {
					t.Fatalf("read %d of %s = %q, %v, %v; want %q", i+1, w.key, v, ok, err, w.value)
				}
			}
			if got, want := c.shard.Load(), st.Room("r1"); got != want {
				t.Fatalf("the call's shard is %v, want the room's %v", got.Name(), want.Name())
			}
		})
	}
}
