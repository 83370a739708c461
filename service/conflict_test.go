package service_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/unibus/membership/client"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/subjects"
)

// TestConcurrentAdds races room.add on one room through two replicas. Every
// add reads the room and writes it back with its revision, so a lost
// compare-and-set is re-planned, never a lost update: the member count
// matches the member records.
func TestConcurrentAdds(t *testing.T) {
	e := newEnv(t, service.Config{})
	e2 := e.replica(t)
	ctx := natstest.Ctx(t, 2)
	alice := membertest.Member(t, e.s, e.admin, "alice")
	const workers, perWorker = 2, 5
	var names []string
	for i := range workers * perWorker {
		n := fmt.Sprintf("m%02d", i)
		e.register(t, n)
		names = append(names, n)
	}
	if _, _, err := alice.CreateRoom(ctx, "race", "chat.race", nil); err != nil {
		t.Fatal(err)
	}

	t.Run("distinct members", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, len(names))
		for w := range workers {
			c := client.New(natstest.Connect(t, e.s), alice.Identity())
			wg.Go(func() {
				for _, n := range names[w*perWorker : (w+1)*perWorker] {
					errs <- addRetrying(ctx, c, "race", n)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("AddMember: %v", err)
			}
		}
		r, err := alice.Room(ctx, "race")
		if err != nil {
			t.Fatal(err)
		}
		members, err := alice.AllMembers(ctx, "race")
		if err != nil {
			t.Fatal(err)
		}
		if want := 1 + len(names); r.Members != want || len(members) != want {
			t.Fatalf("room counts %d members, lists %d, want %d", r.Members, len(members), want)
		}
	})

	t.Run("same member twice", func(t *testing.T) {
		// Both requests may read the room before either commits; the
		// loser's batch conflicts, is re-planned and finds the member.
		for i := range 4 {
			n := fmt.Sprintf("dup%d", i)
			e.register(t, n)
			before, err := alice.Room(ctx, "race")
			if err != nil {
				t.Fatal(err)
			}
			errs := make([]error, 2)
			var wg sync.WaitGroup
			for j := range errs {
				c := client.New(natstest.Connect(t, e.s), alice.Identity())
				wg.Go(func() { errs[j] = addRetrying(ctx, c, "race", n) })
			}
			wg.Wait()
			ok, exists := 0, 0
			for _, err := range errs {
				switch {
				case err == nil:
					ok++
				case errors.Is(err, client.ErrExists):
					exists++
				default:
					t.Fatalf("AddMember(%s): %v", n, err)
				}
			}
			if ok != 1 || exists != 1 {
				t.Fatalf("AddMember(%s) twice: %d succeeded, %d exists; want 1 and 1", n, ok, exists)
			}
			after, err := alice.Room(ctx, "race")
			if err != nil {
				t.Fatal(err)
			}
			if after.Members != before.Members+1 {
				t.Fatalf("members %d → %d after adding %s twice", before.Members, after.Members, n)
			}
		}
	})

	conflicts := 0
	for _, svc := range []*service.Service{e.svc, e2} {
		for _, ep := range svc.Micro().Stats().Endpoints {
			if ep.Name == subjects.OpRoomAdd.EndpointName() {
				conflicts += statInt(t, ep.Data, "batch_conflicts")
			}
		}
	}
	t.Logf("room.add compare-and-set conflicts re-planned: %d", conflicts)
}

// addRetrying adds a member, trying again while concurrent adds win
// (409 conflict after the service's own re-planning).
func addRetrying(ctx context.Context, c *client.Client, room, endpoint string) error {
	for {
		_, err := c.AddMember(ctx, room, endpoint)
		if !errors.Is(err, client.ErrConflict) || ctx.Err() != nil {
			return err
		}
	}
}
