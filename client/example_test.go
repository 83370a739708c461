package client_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/service"
)

// Example runs the quickstart against an in-process nats-server: an admin
// is bootstrapped, registers alice and bob, alice creates a room with bob,
// and bob fetches and opens the room key.
func Example() {
	t := newExampleT()
	defer t.cleanup()

	s, admin := membertest.Start(t, service.Config{})
	alice := membertest.Member(t, s, admin, "alice")
	bob := membertest.Member(t, s, admin, "bob")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	room, _, err := alice.CreateRoom(ctx, "ops", "chat.ops", []string{"bob"})
	if err != nil {
		fmt.Println("create room:", err)
		return
	}
	key, epoch, err := bob.Key(ctx, room.ID, 0)
	if err != nil {
		fmt.Println("bob's key:", err)
		return
	}
	fmt.Printf("room %s: %d members; bob opened a %d-byte key of epoch %d\n", room.ID, room.Members, len(key), epoch)
	// Output: room ops: 2 members; bob opened a 32-byte key of epoch 1
}

// exampleT lets an Example use the test kit's helpers, which take a
// testing.TB: it provides the few methods they call and panics on the rest.
type exampleT struct {
	testing.TB
	cleanups []func()
}

func newExampleT() *exampleT { return &exampleT{} }

func (e *exampleT) Helper()                           {}
func (e *exampleT) Cleanup(f func())                  { e.cleanups = append(e.cleanups, f) }
func (e *exampleT) Fatal(args ...any)                 { panic(fmt.Sprint(args...)) }
func (e *exampleT) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }

func (e *exampleT) TempDir() string {
	dir, err := os.MkdirTemp("", "membership-example-")
	if err != nil {
		panic(err)
	}
	e.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func (e *exampleT) cleanup() {
	for i := len(e.cleanups) - 1; i >= 0; i-- {
		e.cleanups[i]()
	}
}
