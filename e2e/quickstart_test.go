package e2e

import (
	"bytes"
	"testing"

	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
)

// TestQuickstartClient walks the README quickstart through the Go client:
// admin bootstrapped, two identities registered, a room created, the second
// member fetching and opening its key.
func TestQuickstartClient(t *testing.T) {
	s, admin := membertest.Start(t, service.Config{})
	alice := membertest.Member(t, s, admin, "alice")
	bob := membertest.Member(t, s, admin, "bob")
	ctx := natstest.Ctx(t, 3)

	room, key, err := alice.CreateRoom(ctx, "ops", "chat.ops", []string{"bob"})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if room.Owner != "alice" || room.Epoch != 1 || room.Members != 2 {
		t.Fatalf("room = %+v", room)
	}
	got, epoch, err := bob.Key(ctx, "ops", 0)
	if err != nil {
		t.Fatalf("bob key: %v", err)
	}
	if epoch != 1 || !bytes.Equal(got, key) {
		t.Fatalf("bob opened epoch %d key %x, want epoch 1 key %x", epoch, got, key)
	}
	mine, err := bob.MyRooms(ctx, "", 0)
	if err != nil || len(mine.Rooms) != 1 || mine.Rooms[0].ID != "ops" {
		t.Fatalf("bob rooms = %+v, %v", mine, err)
	}
}
