package store

import (
	"testing"
	"time"

	"github.com/unibus/membership/internal/natstest"
)

// TestGetLastStoppedShort: when the server stops a multi_last answer at
// its byte bound (here one message), GetLast reads the keys it held back
// one by one and still returns every key's entry in order.
func TestGetLastStoppedShort(t *testing.T) {
	s := natstest.Server(t)
	js := natstest.JetStream(t, natstest.Connect(t, s))
	st, err := Open(natstest.Ctx(t, 1), js, Config{Bucket: "t-short", KeysBucket: "t-short-keys", MaxTTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := natstest.Ctx(t, 1)
	if err := st.Commit(ctx, []Write{{Key: "room.a", Value: []byte("a")}, {Key: "room.b", Value: []byte("b")}, {Key: "room.c", Value: []byte("c")}}); err != nil {
		t.Fatal(err)
	}
	multiMaxBytes = 1
	t.Cleanup(func() { multiMaxBytes = 0 })
	keys := []string{"room.c", "room.none", "room.a", "room.b"}
	got, err := st.GetLast(ctx, keys...)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"c", "", "a", "b"} {
		if string(got[i].Value) != want || (want == "") != (got[i].Rev == 0) {
			t.Errorf("%s: %+v, want value %q", keys[i], got[i], want)
		}
	}
}
