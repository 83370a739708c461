package client_test

import (
	"context"
	"fmt"
	"time"

	"github.com/unibus/membership/client"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
)

// ExampleClient_Channel: alice and bob talk in their room's encrypted
// channel. Both pin the service key: the member list that decides who may
// send comes from replies it signed.
func ExampleClient_Channel() {
	t := newExampleT()
	defer t.cleanup()
	spub := membertest.ServicePub() // the key membertest.Service signs with
	s, admin := membertest.Start(t, service.Config{})
	pinned := func(name string) *client.Client {
		c := membertest.Member(t, s, admin, name)
		return client.New(natstest.Connect(t, s), c.Identity(), client.WithServiceKey(spub))
	}
	alice, bob := pinned("alice"), pinned("bob")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, _, err := alice.CreateRoom(ctx, "ops", "chat.ops", []string{"bob"}); err != nil {
		fmt.Println("create room:", err)
		return
	}
	ach, err := alice.Channel(ctx, "ops")
	if err != nil {
		fmt.Println("alice's channel:", err)
		return
	}
	bch, err := bob.Channel(ctx, "ops")
	if err != nil {
		fmt.Println("bob's channel:", err)
		return
	}
	// bob answers requests on the room subject.
	if _, err := bch.Subscribe(ctx, func(m *client.Message) {
		_ = m.Respond(ctx, []byte("hello "+m.Sender+", "+string(m.Data)+" received"))
	}); err != nil {
		fmt.Println("subscribe:", err)
		return
	}
	reply, err := ach.Request(ctx, []byte("status?"))
	if err != nil {
		fmt.Println("request:", err)
		return
	}
	fmt.Printf("%s (epoch %d): %s\n", reply.Sender, reply.Epoch, reply.Data)
	// Output: bob (epoch 1): hello alice, status? received
}
