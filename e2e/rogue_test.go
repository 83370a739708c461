package e2e

import (
	"encoding/base64"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/envelope"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/subjects"
)

// rogueReply builds what a rogue responder answers to req.
type rogueReply func(req *nats.Msg) *nats.Msg

// startRogue answers every operation subject on its own connection (not in
// the service's queue group, so it sees every request) with reply. With
// upstream set it is a man in the middle: it answers first, then forwards
// the request unchanged to the real service there (same subject, so the
// signature still holds) and relays the genuine reply second. That fixes
// the order — forgery first — whatever the machine's speed.
func startRogue(t *testing.T, nc, upstream *nats.Conn, reply rogueReply) {
	t.Helper()
	startFlood(t, nc, upstream, reply, 1)
}

// startFlood is startRogue answering each request copies times before the
// genuine reply.
func startFlood(t *testing.T, nc, upstream *nats.Conn, reply rogueReply, copies int) {
	t.Helper()
	sub, err := nc.Subscribe(subjects.DefaultPrefix+".>", func(req *nats.Msg) {
		for range copies {
			m := reply(req)
			m.Subject = req.Reply
			_ = nc.PublishMsg(m)
		}
		if upstream == nil {
			return
		}
		genuine, err := upstream.Request(req.Subject, req.Data, natstest.Patience)
		if err != nil {
			return
		}
		_ = nc.PublishMsg(&nats.Msg{Subject: req.Reply, Header: genuine.Header, Data: genuine.Data})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// fakeRoom is the rogue's lie: a room owned by mallory.
func fakeRoom(t *testing.T) []byte {
	return membertest.Body(t, api.Room{ID: "r1", Subject: "chat.r1", Owner: "mallory", Epoch: 7, Members: 1})
}

// rogues are the rogue responders' strategies: unsigned, signed by their
// own server key, and a genuine signed reply recorded from another request
// (its signature is real, but bound to the other request's nonce).
func rogues(t *testing.T, recorded *nats.Msg) map[string]rogueReply {
	own, err := nkeys.CreateServer()
	if err != nil {
		t.Fatal(err)
	}
	ownPub, _ := own.PublicKey()
	return map[string]rogueReply{
		"unsigned": func(*nats.Msg) *nats.Msg {
			return &nats.Msg{Data: fakeRoom(t)}
		},
		"signed by another key": func(req *nats.Msg) *nats.Msg {
			var nonce []byte // the rogue reads the request's nonce and signs over it
			if env, err := envelope.Decode(req.Data); err == nil {
				nonce = env.Nonce
			}
			body := fakeRoom(t)
			sig, _ := own.Sign(api.ReplyCanonical(nonce, subjects.CodeOK, "", body))
			m := &nats.Msg{Data: body, Header: nats.Header{}}
			m.Header.Set(subjects.HeaderServiceKey, ownPub)
			m.Header.Set(subjects.HeaderReplySig, base64.RawURLEncoding.EncodeToString(sig))
			return m
		},
		"genuine reply replayed": func(*nats.Msg) *nats.Msg {
			return &nats.Msg{Data: recorded.Data, Header: recorded.Header}
		},
	}
}

// TestRogueResponder: a rogue on the same subjects answers every request
// first-hand. A client pinned to the service key refuses every rogue
// reply — unsigned, signed by another key, or a genuine signature replayed
// from another request — and still gets the real service's answer; alone
// on the bus, the rogue gets ErrReplySignature. An unpinned client is
// fooled, which is why the pin matters.
func TestRogueResponder(t *testing.T) {
	spub := membertest.ServicePub()

	// A genuine signed reply to record, from a real deployment.
	real := natstest.Server(t)
	membertest.Service(t, real, service.Config{})
	admin := membertest.Admin(t, real)
	alice := membertest.Member(t, real, admin, "alice")
	ctx := natstest.Ctx(t, 6)
	if _, _, err := alice.CreateRoom(ctx, "r1", "chat.r1", nil); err != nil {
		t.Fatal(err)
	}
	rnc := natstest.Connect(t, real)
	recorded, err := rnc.Request(subjects.Subject(subjects.DefaultPrefix, subjects.OpRoomGet),
		membertest.Signed(t, alice.Identity().Sign, subjects.OpRoomGet, membertest.Body(t, api.RoomRequest{Room: "r1"})), 10*time.Second)
	if err != nil || recorded.Header.Get(subjects.HeaderReplySig) == "" {
		t.Fatalf("record a genuine reply: %v %v", err, recorded)
	}

	for name, rogue := range rogues(t, recorded) {
		t.Run(name+" answering first", func(t *testing.T) {
			bus := natstest.Server(t) // the client's bus, where the rogue sits
			startRogue(t, natstest.Connect(t, bus), natstest.Connect(t, real), rogue)
			pinned := client.New(natstest.Connect(t, bus), alice.Identity(), client.WithServiceKey(spub))
			for range 5 {
				r, err := pinned.Room(ctx, "r1")
				if err != nil {
					t.Fatalf("pinned client with a rogue beside the service: %v", err)
				}
				if r.Owner != "alice" {
					t.Fatalf("pinned client accepted the rogue's room %+v", r)
				}
			}
			if pinned.RefusedReplies() != 5 {
				t.Fatalf("refused %d rogue replies, want one per request (5)", pinned.RefusedReplies())
			}
		})
		t.Run(name+" alone", func(t *testing.T) {
			s := natstest.Server(t)
			startRogue(t, natstest.Connect(t, s), nil, rogue)
			nc := natstest.Connect(t, s)
			pinned := client.New(nc, alice.Identity(), client.WithServiceKey(spub), client.WithTimeout(500*time.Millisecond), client.WithRetries(0))
			if _, err := pinned.Room(ctx, "r1"); !errors.Is(err, client.ErrReplySignature) {
				t.Fatalf("pinned client, rogue alone: %v, want ErrReplySignature", err)
			}
			// A rogue error (say, a fake "already applied") is refused the
			// same way: errors are signed too.
			if _, err := pinned.RemoveMember(ctx, "r1", "bob"); !errors.Is(err, client.ErrReplySignature) {
				t.Fatalf("pinned client, rogue mutation reply: %v, want ErrReplySignature", err)
			}
			if name == "unsigned" {
				// Verification is the default: with no key given, an
				// unsigned reply is refused all the same (issue 11) …
				byDefault := client.New(nc, alice.Identity(), client.WithTimeout(500*time.Millisecond), client.WithRetries(0))
				if _, err := byDefault.Room(ctx, "r1"); !errors.Is(err, client.ErrReplySignature) {
					t.Fatalf("default client, unsigned rogue alone: %v, want ErrReplySignature", err)
				}
				// … and only the explicit opt-out is fooled.
				unverified := client.New(nc, alice.Identity(), client.WithUnverifiedReplies())
				r, err := unverified.Room(ctx, "r1")
				if err != nil || r.Owner != "mallory" {
					t.Fatalf("unverified client: %+v %v; expected it to be fooled", r, err)
				}
			}
		})
	}

	t.Run("flood of 2,000 signed by another key answering first", func(t *testing.T) {
		// One call's replies wait for verification in the caller's own
		// queue, bounded like a subscription of its own (500,000 by
		// default, docs/security.md): 2,000 forgeries ahead of the real
		// reply do not push it out.
		bus := natstest.Server(t)
		startFlood(t, natstest.Connect(t, bus), natstest.Connect(t, real), rogues(t, recorded)["signed by another key"], 2000)
		pinned := client.New(natstest.Connect(t, bus), alice.Identity(), client.WithServiceKey(spub), client.WithRetries(0))
		if r, err := pinned.Room(ctx, "r1"); err != nil || r.Owner != "alice" {
			t.Fatalf("pinned client behind a flood: %+v, %v", r, err)
		}
		if n := pinned.RefusedReplies(); n != 2000 {
			t.Fatalf("refused %d replies, want the 2,000 forgeries", n)
		}
	})

	t.Run("misconfigured pin", func(t *testing.T) {
		user, _ := nkeys.CreateUser()
		upub, _ := user.PublicKey()
		c := client.New(natstest.Connect(t, real), alice.Identity(), client.WithServiceKey(upub), client.WithTimeout(time.Second), client.WithRetries(0))
		if _, err := c.Room(ctx, "r1"); !errors.Is(err, client.ErrReplySignature) {
			t.Fatalf("pin of a user key: %v, want ErrReplySignature (never silently unverified)", err)
		}
	})
}
