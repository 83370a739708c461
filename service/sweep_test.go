package service_test

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"

	"github.com/unibus/membership/client"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/store"
)

// TestSweep writes an orphan sealed-key object beside referenced ones: a
// sweep with grace 0 removes the orphan and the key of a removed member,
// and nothing any record still points at; a sweep with a long grace keeps
// a young orphan.
func TestSweep(t *testing.T) {
	s, admin := membertest.Start(t, service.Config{})
	alice := membertest.Member(t, s, admin, "alice")
	bob := membertest.Member(t, s, admin, "bob")
	carol := membertest.Member(t, s, admin, "carol")
	dave := membertest.Member(t, s, admin, "dave")
	st := membertest.Store(t, natstest.Connect(t, s))
	ctx := natstest.Ctx(t, 3)

	if _, _, err := alice.CreateRoom(ctx, "r", "chat.r", []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"carol", "dave"} {
		if _, err := alice.AddMember(ctx, "r", m); err != nil {
			t.Fatalf("add %s: %v", m, err)
		}
	}
	if _, err := alice.RemoveMember(ctx, "r", "carol"); err != nil {
		t.Fatal(err)
	}
	const orphan = "r/1/add-mallory-00112233445566778899aabbccddeeff"
	if err := st.PutObject(ctx, orphan, []byte("sealed for a batch that never committed")); err != nil {
		t.Fatal(err)
	}
	before := objectNames(t, st)
	if len(before) != 4 { // bundle, carol's and dave's keys, orphan
		t.Fatalf("objects before the sweep: %v", before)
	}

	// A long grace keeps every unreferenced object: they are young.
	res, err := service.Sweep(ctx, st, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if res.Removed != 0 || !slices.Equal(objectNames(t, st), before) {
		t.Fatalf("sweep with 1h grace removed %d: %+v", res.Removed, res)
	}

	res, err = service.Sweep(ctx, st, 0)
	if err != nil {
		t.Fatal(err)
	}
	after := objectNames(t, st)
	t.Logf("sweep: %+v; objects %v -> %v", res, before, after)
	if res.Removed != 2 || res.Referenced != 2 || len(after) != 2 {
		t.Fatalf("sweep = %+v, objects left %v; want the orphan and carol's key removed", res, after)
	}
	for _, n := range after {
		if n == orphan || bytes.Contains([]byte(n), []byte("add-carol")) {
			t.Fatalf("%s survived the sweep", n)
		}
	}
	// What is referenced still serves its members.
	for name, c := range map[string]*client.Client{"alice": alice, "bob": bob, "dave": dave} {
		if _, _, err := c.Key(ctx, "r", 0); err != nil {
			t.Errorf("%s's key after the sweep: %v", name, err)
		}
	}
	if _, _, err := carol.Key(ctx, "r", 0); err == nil {
		t.Error("removed carol still fetches a key")
	}
	// A second sweep finds nothing more to do.
	if res, err = service.Sweep(ctx, st, 0); err != nil || res.Removed != 0 {
		t.Fatalf("second sweep = %+v, %v", res, err)
	}
}

func objectNames(t *testing.T, st *store.Store) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), natstest.Patience)
	defer cancel()
	infos, err := st.ObjectInfos(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range infos {
		names = append(names, i.Name)
	}
	slices.Sort(names)
	return names
}
