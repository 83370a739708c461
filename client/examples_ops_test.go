package client_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/unibus/membership/client"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
)

// world is an in-process deployment for the examples: a server, the
// service, an admin and two registered members, alice and bob.
type world struct {
	t                 *exampleT
	admin, alice, bob *client.Client
	ctx               context.Context
	cancel            context.CancelFunc
}

func newWorld() *world {
	t := newExampleT()
	s := natstest.Server(t)
	membertest.Service(t, s, service.Config{})
	w := &world{t: t, admin: membertest.Admin(t, s)}
	w.alice = membertest.Member(t, s, w.admin, "alice")
	w.bob = membertest.Member(t, s, w.admin, "bob")
	w.ctx, w.cancel = context.WithTimeout(context.Background(), 20*time.Second)
	return w
}

func (w *world) close() { w.cancel(); w.t.cleanup() }

// room makes alice's room "ops" with bob.
func (w *world) room() {
	if _, _, err := w.alice.CreateRoom(w.ctx, "ops", "chat.ops", []string{"bob"}); err != nil {
		panic(err)
	}
}

func ExampleClient_Register() {
	w := newWorld()
	defer w.close()
	id, _ := identity.New("carol")
	pub, _ := id.Public()
	got, err := w.admin.Register(w.ctx, pub, false)
	fmt.Println(got.Endpoint, got.Admin, err)
	// Output: carol false <nil>
}

func ExampleClient_Whoami() {
	w := newWorld()
	defer w.close()
	me, _ := w.alice.Whoami(w.ctx)
	fmt.Println(me.Endpoint, me.Admin)
	// Output: alice false
}

func ExampleClient_Lookup() {
	w := newWorld()
	defer w.close()
	pub, _ := w.alice.Lookup(w.ctx, "bob")
	fmt.Println(pub.Endpoint, pub.XKey[:1])
	// Output: bob X
}

func ExampleClient_Identities() {
	w := newWorld()
	defer w.close()
	page, _ := w.admin.Identities(w.ctx, "", 2)
	fmt.Println(len(page.Identities), page.Identities[0].Endpoint, page.Next)
	// Output: 2 admin alice
}

func ExampleClient_Disable() {
	w := newWorld()
	defer w.close()
	w.admin.Disable(w.ctx, "bob")
	_, err := w.bob.Whoami(w.ctx)
	fmt.Println(errors.Is(err, client.ErrForbidden))
	w.admin.Enable(w.ctx, "bob")
	me, _ := w.bob.Whoami(w.ctx)
	fmt.Println(me.Disabled)
	// Output:
	// true
	// false
}

func ExampleClient_CreateRoom() {
	w := newWorld()
	defer w.close()
	room, key, _ := w.alice.CreateRoom(w.ctx, "ops", "chat.ops", []string{"bob"})
	fmt.Println(room.Owner, room.Subject, room.Epoch, room.Members, len(key))
	// Output: alice chat.ops 1 2 32
}

func ExampleClient_Room() {
	w := newWorld()
	defer w.close()
	w.room()
	room, _ := w.bob.Room(w.ctx, "ops")
	fmt.Println(room.ID, room.Owner)
	// Output: ops alice
}

func ExampleClient_Members() {
	w := newWorld()
	defer w.close()
	w.room()
	page, _ := w.bob.Members(w.ctx, "ops", "", 0)
	for _, m := range page.Members {
		fmt.Println(m.Endpoint, m.Since)
	}
	// Output:
	// alice 1
	// bob 1
}

func ExampleClient_Key() {
	w := newWorld()
	defer w.close()
	_, key, _ := w.alice.CreateRoom(w.ctx, "ops", "chat.ops", []string{"bob"})
	got, epoch, _ := w.bob.Key(w.ctx, "ops", 0)
	fmt.Println(epoch, string(got) == string(key))
	// Output: 1 true
}

func ExampleClient_AddMember() {
	w := newWorld()
	defer w.close()
	w.alice.CreateRoom(w.ctx, "ops", "chat.ops", nil)
	room, _ := w.alice.AddMember(w.ctx, "ops", "bob")
	_, epoch, err := w.bob.Key(w.ctx, "ops", 0)
	fmt.Println(room.Members, epoch, err)
	// Output: 2 1 <nil>
}

func ExampleClient_RemoveMember() {
	w := newWorld()
	defer w.close()
	w.room()
	room, _ := w.alice.RemoveMember(w.ctx, "ops", "bob")
	_, _, err := w.bob.Key(w.ctx, "ops", 0)
	fmt.Println(room.Members, room.RekeyOwed, errors.Is(err, client.ErrForbidden))
	// Output: 1 true true
}

func ExampleClient_Rekey() {
	w := newWorld()
	defer w.close()
	w.room()
	room, key, _ := w.alice.Rekey(w.ctx, "ops")
	got, epoch, _ := w.bob.Key(w.ctx, "ops", 0)
	fmt.Println(room.Epoch, epoch, string(got) == string(key))
	// Output: 2 2 true
}

func ExampleClient_Leave() {
	w := newWorld()
	defer w.close()
	w.room()
	room, _ := w.bob.Leave(w.ctx, "ops")
	fmt.Println(room.Members, room.RekeyOwed)
	// Output: 1 true
}

func ExampleClient_DeleteRoom() {
	w := newWorld()
	defer w.close()
	w.room()
	w.alice.DeleteRoom(w.ctx, "ops")
	_, err := w.bob.Room(w.ctx, "ops")
	fmt.Println(errors.Is(err, client.ErrNotFound))
	// Output: true
}

func ExampleClient_MyRooms() {
	w := newWorld()
	defer w.close()
	w.room()
	page, _ := w.bob.MyRooms(w.ctx, "", 0)
	fmt.Println(len(page.Rooms), page.Rooms[0].ID)
	// Output: 1 ops
}
