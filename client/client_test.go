package client_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/micro"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/subjects"
)

// TestRoomKeys seals room keys through the service and opens them again:
// each member opens the key its owner generated, for every epoch it was a
// member at, and nobody else gets one.
func TestRoomKeys(t *testing.T) {
	s, admin := membertest.Start(t, service.Config{})
	alice := membertest.Member(t, s, admin, "alice")
	bob := membertest.Member(t, s, admin, "bob")
	carol := membertest.Member(t, s, admin, "carol")
	ctx := natstest.Ctx(t, 2)

	_, key1, err := alice.CreateRoom(ctx, "ops", "chat.ops", []string{"bob"})
	if err != nil {
		t.Fatalf("CreateRoom: %v", err)
	}
	if len(key1) != client.RoomKeySize {
		t.Fatalf("room key is %d bytes", len(key1))
	}
	if _, err := alice.AddMember(ctx, "ops", "carol"); err != nil {
		t.Fatalf("AddMember: %v", err)
	}
	r, key2, err := alice.Rekey(ctx, "ops")
	if err != nil {
		t.Fatalf("Rekey: %v", err)
	}
	if r.Epoch != 2 || bytes.Equal(key1, key2) {
		t.Fatalf("after rekey: epoch %d, key changed %v", r.Epoch, !bytes.Equal(key1, key2))
	}

	tests := []struct {
		name  string
		c     *client.Client
		epoch uint64
		key   []byte
		want  uint64
		err   error
	}{
		{"owner current", alice, 0, key2, 2, nil},
		{"owner epoch 1", alice, 1, key1, 1, nil},
		{"bob current", bob, 0, key2, 2, nil},
		{"bob epoch 1", bob, 1, key1, 1, nil},
		{"carol added mid epoch 1", carol, 1, key1, 1, nil},
		{"carol current", carol, 2, key2, 2, nil},
		{"future epoch", bob, 3, nil, 0, client.ErrNotFound},
		{"admin is not a member", admin, 0, nil, 0, client.ErrForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, epoch, err := tt.c.Key(ctx, "ops", tt.epoch)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("Key = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Key: %v", err)
			}
			if epoch != tt.want || !bytes.Equal(got, tt.key) {
				t.Fatalf("Key = epoch %d %x, want epoch %d %x", epoch, got, tt.want, tt.key)
			}
		})
	}

	t.Run("sealed to the member only", func(t *testing.T) {
		sk, err := bob.SealedKey(ctx, "ops", 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := carol.Identity().XKey.Open(sk.Sealed, sk.Sealer); err == nil {
			t.Fatal("carol opened the key sealed to bob")
		}
	})
}

// TestRetryUntilServiceStarts sends a mutation before any service
// replica runs; the client retries through its backoff and succeeds once
// a replica starts, and the mutation is applied once.
func TestRetryUntilServiceStarts(t *testing.T) {
	s := natstest.Server(t)
	admin := membertest.Admin(t, s) // bootstraps through the store: no service needed
	bob, err := identity.New("bob")
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := bob.Public()
	c := client.New(natstest.Connect(t, s), admin.Identity(),
		client.WithRetries(6), client.WithBackoff(50*time.Millisecond), client.WithTimeout(2*time.Second))
	ctx := natstest.Ctx(t, 2)

	type result struct {
		id  *api.Identity
		err error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		id, err := c.Register(ctx, pub, false)
		done <- result{id, err}
	}()
	time.Sleep(200 * time.Millisecond)
	select {
	case r := <-done:
		t.Fatalf("Register returned before any service ran: %+v, %v", r.id, r.err)
	default:
	}
	membertest.Service(t, s, service.Config{})
	r := <-done
	if r.err != nil {
		t.Fatalf("Register with retries: %v", r.err)
	}
	if r.id.Endpoint != "bob" || r.id.SignKey != pub.SignKey {
		t.Fatalf("Register = %+v", r.id)
	}
	t.Logf("succeeded after %s", time.Since(start))

	page, err := admin.Identities(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, id := range page.Identities {
		names = append(names, id.Endpoint)
	}
	if !slices.Equal(names, []string{"admin", "bob"}) {
		t.Fatalf("identities = %v, want [admin bob]", names)
	}
	if commits := batchCommits(t, s, subjects.OpIdentityRegister); commits != 1 {
		t.Fatalf("identity_register committed %d batches, want 1", commits)
	}

	t.Run("no retries", func(t *testing.T) {
		s2 := natstest.Server(t)
		c := client.New(natstest.Connect(t, s2), admin.Identity(), client.WithRetries(0))
		if _, err := c.Whoami(ctx); err == nil {
			t.Fatal("Whoami without a service succeeded")
		}
	})
}

func TestErrorSentinels(t *testing.T) {
	s, admin := membertest.Start(t, service.Config{})
	alice := membertest.Member(t, s, admin, "alice")
	bob := membertest.Member(t, s, admin, "bob")
	stranger, err := identity.New("stranger")
	if err != nil {
		t.Fatal(err)
	}
	strangerC := client.New(natstest.Connect(t, s), stranger)
	ctx := natstest.Ctx(t, 2)
	if _, _, err := alice.CreateRoom(ctx, "ops", "chat.ops", nil); err != nil {
		t.Fatal(err)
	}
	bobPub, _ := bob.Identity().Public()

	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"403 non-admin registers", func() error { _, err := alice.Register(ctx, bobPub, true); return err }, client.ErrForbidden},
		{"403 non-member reads room", func() error { _, err := bob.Room(ctx, "ops"); return err }, client.ErrForbidden},
		{"403 non-owner deletes", func() error { _, err := bob.DeleteRoom(ctx, "ops"); return err }, client.ErrForbidden},
		{"404 unknown endpoint", func() error { _, err := alice.Lookup(ctx, "nobody"); return err }, client.ErrNotFound},
		{"404 unknown room", func() error { _, err := alice.Room(ctx, "none"); return err }, client.ErrNotFound},
		{"409 room exists", func() error { _, _, err := alice.CreateRoom(ctx, "ops", "chat.other", nil); return err }, client.ErrExists},
		{"409 subject taken", func() error { _, _, err := alice.CreateRoom(ctx, "ops2", "chat.ops", nil); return err }, client.ErrExists},
		{"400 bad room id", func() error { _, err := alice.Room(ctx, "a.b"); return err }, client.ErrInvalid},
		{"400 wildcard subject", func() error { _, _, err := alice.CreateRoom(ctx, "r2", "chat.*", nil); return err }, client.ErrInvalid},
		{"413 page too large", func() error { _, err := admin.Identities(ctx, "", api.MaxPage+1); return err }, client.ErrTooLarge},
		{"401 unregistered signer", func() error { _, err := strangerC.Whoami(ctx); return err }, client.ErrUnauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Message == "" {
				t.Fatalf("err = %#v, want an *api.Error with the service's message", err)
			}
			for _, other := range []error{client.ErrInvalid, client.ErrTooLarge, client.ErrUnauthenticated, client.ErrReplay,
				client.ErrForbidden, client.ErrNotFound, client.ErrExists, client.ErrConflict, client.ErrUnavailable,
				client.ErrInternal, client.ErrRateLimited} {
				if other != tt.want && errors.Is(err, other) {
					t.Fatalf("err %v also matches %v", err, other)
				}
			}
		})
	}
}

// batchCommits asks the (single) service replica on s, as `nats micro
// stats` does, how many batches op has committed.
func batchCommits(t *testing.T, s *server.Server, op subjects.Op) int {
	t.Helper()
	nc := natstest.Connect(t, s)
	msg, err := nc.Request(membertest.Control(t, micro.StatsVerb), nil, 2*time.Second)
	if err != nil {
		t.Fatalf("stats: %v", err)
	}
	var st micro.Stats
	if err := json.Unmarshal(msg.Data, &st); err != nil {
		t.Fatalf("stats: %v", err)
	}
	for _, ep := range st.Endpoints {
		if ep.Name != op.EndpointName() {
			continue
		}
		var d struct {
			BatchCommits int `json:"batch_commits"`
		}
		if err := json.Unmarshal(ep.Data, &d); err != nil {
			t.Fatalf("stats data of %s: %v", ep.Name, err)
		}
		return d.BatchCommits
	}
	t.Fatalf("no stats for %s", op)
	return 0
}
