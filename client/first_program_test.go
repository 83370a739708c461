package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/membership/client"
	"github.com/unibus/membership/identity"
)

// Example_firstProgram is what a program using the service looks like: it
// is compiled by go test but not run (it needs a deployment), and it is the
// code at the top of the package documentation (TestDocFirstProgram keeps
// the two equal).
func Example_firstProgram() {
	// Connect as your NATS user: docs/deploy.md's client user logs in with
	// an nkey seed file and may only receive replies under its own inbox
	// prefix.
	user, err := nats.NkeyOptionFromSeed("client-user.nk")
	if err != nil {
		log.Fatal(err)
	}
	nc, err := nats.Connect("nats://127.0.0.1:4222", user, nats.CustomInboxPrefix("_INBOX_client"))
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()

	// The identity file `memberctl keygen --endpoint alice` wrote, and the
	// service key the operator published (service_key in `nats micro info`):
	// replies not signed by it are refused.
	alice, err := identity.Load("alice.id")
	if err != nil {
		log.Fatal(err)
	}
	c := client.New(nc, alice, client.WithServiceKey(os.Getenv("MEMBERSHIP_SERVICE_KEY")))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Create a room with bob: the room key is made and sealed here, to
	// alice and bob; the service never sees it in clear.
	room, key, err := c.CreateRoom(ctx, "ops", "chat.ops", []string{"bob"})
	switch {
	case errors.Is(err, client.ErrExists):
		// Created before: fetch and open alice's own sealed key instead.
		key, _, err = c.Key(ctx, "ops", 0) // 0: the current epoch
		if err != nil {
			log.Fatal(err)
		}
	case errors.Is(err, client.ErrForbidden), errors.Is(err, client.ErrNotFound):
		log.Fatalf("not allowed, or bob is not registered: %v", err)
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Printf("room %s, epoch %d, created %s\n", room.ID, room.Epoch, time.UnixMilli(room.Created))
	}
	fmt.Printf("room key: %d bytes\n", len(key))
}

// TestDocFirstProgram checks that the package documentation shows exactly
// the body of Example_firstProgram, so that the code in the documentation
// compiles.
func TestDocFirstProgram(t *testing.T) {
	body := func(path, start, end, prefix string) string {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		s := string(data)
		i := strings.Index(s, start)
		j := strings.Index(s[i+1:], end)
		if i < 0 || j < 0 {
			t.Fatalf("%s: no %q … %q", path, start, end)
		}
		var lines []string
		for _, l := range strings.Split(s[i+len(start):i+1+j], "\n") {
			lines = append(lines, strings.TrimPrefix(strings.TrimPrefix(l, prefix), "\t"))
		}
		return strings.TrimSpace(strings.Join(lines, "\n"))
	}
	example := body("first_program_test.go", "func Example_firstProgram() {\n", "\n}\n", "")
	doc := body("doc.go", "// A first program:\n//\n", "\n//\n// End of the first program.", "//")
	if example != doc {
		t.Fatalf("doc.go's first program differs from Example_firstProgram:\n--- doc.go\n%s\n--- example\n%s", doc, example)
	}
}
