package store_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"

	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/store"
)

// TestWatch: a watch on prefixes delivers the current keys under them, the
// end of that load, then later puts and deletes in stream order with their
// revisions; keys under other prefixes never show. Scan sees the live keys.
func TestWatch(t *testing.T) {
	st, _, _, _ := open(t)
	put := func(key, v string) uint64 {
		t.Helper()
		e := mustGet(t, st, key)
		if err := st.Commit(natstest.Ctx(t, 1), []store.Write{{Key: key, Value: []byte(v), Rev: e.Rev}}); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
		return mustGet(t, st, key).Rev
	}
	r1 := put("id.a", "1")
	put("room.x", "r")
	ctx, cancel := context.WithCancel(natstest.Ctx(t, 1))
	changes := make(chan store.Change, 16)
	loaded := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- st.Watch(ctx, []string{"id.", "signer."}, func(c store.Change) { changes <- c }, func() { close(loaded) })
	}()
	if got := <-changes; !reflect.DeepEqual(got, store.Change{Key: "id.a", Value: []byte("1"), Rev: r1}) {
		t.Fatalf("first change %+v", got)
	}
	<-loaded
	r2 := put("signer.k", "a")
	put("room.y", "r")
	e := mustGet(t, st, "id.a")
	if err := st.Commit(natstest.Ctx(t, 1), []store.Write{{Key: "id.a", Rev: e.Rev, Delete: true}}); err != nil {
		t.Fatal(err)
	}
	r3 := mustGet(t, st, "id.a").Rev
	want := []store.Change{{Key: "signer.k", Value: []byte("a"), Rev: r2}, {Key: "id.a", Rev: r3, Deleted: true}}
	for _, w := range want {
		if got := <-changes; !reflect.DeepEqual(got, w) {
			t.Fatalf("change %+v, want %+v", got, w)
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Watch after cancel: %v", err)
	}
	var scanned []string
	if err := st.Scan(natstest.Ctx(t, 1), "room.", func(k string, _ []byte) error { scanned = append(scanned, k); return nil }); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(scanned, []string{"room.x", "room.y"}) {
		t.Fatalf("Scan(room.) = %v", scanned)
	}
}

// TestShardedWatch: with 4 room shards a watch loads the current keys of
// every shard, each Change naming its shard and that shard's revision,
// calls loaded once after all of them, then follows later writes in every
// shard; Scan lists the live keys of every shard.
func TestShardedWatch(t *testing.T) {
	_, js, _, _ := open(t)
	cfg := testConfig()
	cfg.Bucket, cfg.Shards = "t-wsharded", 4
	st, err := store.Open(natstest.Ctx(t, 1), js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rooms := []string{"a", "room1", "general", "ops-team", "Z", "b0r0"}
	put := func(sh *store.Shard, key string) store.Change {
		t.Helper()
		if err := sh.Commit(natstest.Ctx(t, 1), []store.Write{{Key: key, Value: []byte(key)}}); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
		e, err := sh.Get(natstest.Ctx(t, 1), key)
		if err != nil {
			t.Fatal(err)
		}
		return store.Change{Key: key, Value: []byte(key), Rev: e.Rev, Shard: sh.ID()}
	}
	want := map[string]store.Change{"id.x": put(st.Base(), "id.x")}
	used := map[int]bool{}
	for _, r := range rooms[:3] {
		want["room."+r] = put(st.Room(r), "room."+r)
		used[st.Room(r).ID()] = true
	}
	if len(used) < 2 {
		t.Fatalf("test rooms all in one shard: %v", used)
	}
	ctx, cancel := context.WithCancel(natstest.Ctx(t, 1))
	changes := make(chan store.Change, 16)
	loaded := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- st.Watch(ctx, []string{"id.", "room."}, func(c store.Change) { changes <- c }, func() { close(loaded) })
	}()
	check := func(n int) {
		t.Helper()
		for range n {
			c := <-changes
			if w, ok := want[c.Key]; !ok || !reflect.DeepEqual(c, w) {
				t.Fatalf("change %+v, want %+v", c, w)
			}
			delete(want, c.Key)
		}
	}
	check(len(want))
	<-loaded
	for _, r := range rooms[3:] {
		want["room."+r] = put(st.Room(r), "room."+r)
	}
	check(len(want))
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Watch after cancel: %v", err)
	}
	var scanned []string
	if err := st.Scan(natstest.Ctx(t, 1), "room.", func(k string, _ []byte) error { scanned = append(scanned, k); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(scanned) != len(rooms) {
		t.Fatalf("Scan(room.) = %v, want %d rooms", scanned, len(rooms))
	}
}

// TestWatchLoadsShardsInTurn: with Config.WatchJS the watches and scans run
// on that connection and nothing of them on the requests' one, and a
// sharded watch loads its shards one after another: every current key of
// a shard comes before any of the next shard's.
func TestWatchLoadsShardsInTurn(t *testing.T) {
	s := natstest.Server(t)
	nc := natstest.Connect(t, s)
	wnc := natstest.Connect(t, s)
	cfg := testConfig()
	cfg.Bucket, cfg.Shards, cfg.WatchJS = "t-wturn", 4, natstest.JetStream(t, wnc)
	st, err := store.Open(natstest.Ctx(t, 1), natstest.JetStream(t, nc), cfg)
	if err != nil {
		t.Fatal(err)
	}
	const perShard = 200
	for _, sh := range st.Shards() {
		writes := make([]store.Write, 0, perShard)
		for i := range perShard {
			writes = append(writes, store.Write{Key: fmt.Sprintf("k.%d", i), Value: []byte("v")})
		}
		for chunk := range slices.Chunk(writes, 50) {
			if err := sh.Commit(natstest.Ctx(t, 1), chunk); err != nil {
				t.Fatal(err)
			}
		}
	}
	before := nc.Stats().InMsgs
	ctx, cancel := context.WithCancel(natstest.Ctx(t, 1))
	defer cancel()
	var order []int
	loaded := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- st.Watch(ctx, nil, func(c store.Change) { order = append(order, c.Shard) }, func() { close(loaded) })
	}()
	select {
	case <-loaded:
	case err := <-done:
		t.Fatalf("Watch: %v", err)
	}
	if want := perShard * len(st.Shards()); len(order) < want || !slices.IsSorted(order) {
		t.Fatalf("loaded %d keys in shard order %v, want %d or more, each shard's before the next's", len(order), slices.Compact(order), want)
	}
	cancel()
	<-done
	n := 0
	if err := st.Scan(natstest.Ctx(t, 1), "k.", func(string, []byte) error { n++; return nil }); err != nil || n != perShard*len(st.Shards()) {
		t.Fatalf("Scan: %d keys, %v", n, err)
	}
	if got := nc.Stats().InMsgs - before; got > 20 {
		t.Fatalf("the requests' connection received %d messages during the watch and scan, want none of their keys", got)
	}
	if got := wnc.Stats().InMsgs; got < uint64(2*perShard*len(st.Shards())) {
		t.Fatalf("the watch connection received %d messages, want every key twice", got)
	}
}
