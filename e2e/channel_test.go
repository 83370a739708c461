package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/unibus/membership/client"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
)

// channelWait bounds every wait of the channel tests.
var channelWait = natstest.Within(2)

// channelWorld is one server, one service replica signing with a pinned
// key, an admin and members created on demand.
type channelWorld struct {
	t     *testing.T
	s     *server.Server
	admin *client.Client
	pin   client.Option
	ids   map[string]*identity.Identity
	ctx   context.Context
}

func newChannelWorld(t *testing.T) *channelWorld {
	spub := membertest.ServicePub()
	s := natstest.Server(t)
	membertest.Service(t, s, service.Config{})
	return &channelWorld{t: t, s: s, admin: membertest.Admin(t, s), pin: client.WithServiceKey(spub), ids: map[string]*identity.Identity{}, ctx: natstest.Ctx(t, 2)}
}

// member registers name and returns a pinned client on its own connection.
func (w *channelWorld) member(name string) *client.Client {
	c := membertest.Member(w.t, w.s, w.admin, name)
	w.ids[name] = c.Identity()
	return w.pinned(name)
}

// pinned is another pinned client, on its own connection, of a registered
// member.
func (w *channelWorld) pinned(name string) *client.Client {
	return client.New(natstest.Connect(w.t, w.s), w.ids[name], w.pin)
}

func (w *channelWorld) channel(c *client.Client, room string, opts ...client.ChannelOption) *client.Channel {
	w.t.Helper()
	ch, err := c.Channel(w.ctx, room, opts...)
	if err != nil {
		w.t.Fatalf("%s opens channel %s: %v", c.Identity().Endpoint, room, err)
	}
	return ch
}

// recv waits for the next delivered message.
func recv(t *testing.T, ctx context.Context, got <-chan *client.Message) *client.Message {
	t.Helper()
	select {
	case m := <-got:
		return m
	case <-ctx.Done():
		t.Fatal("no message delivered")
		return nil
	}
}

// raw subscribes to subject on nc directly, as anyone with access to the
// subject can, once the server has the subscription.
func (w *channelWorld) raw(nc *nats.Conn, subject string) *nats.Subscription {
	w.t.Helper()
	sub, err := nc.SubscribeSync(subject)
	if err == nil {
		err = nc.Flush()
	}
	if err != nil {
		w.t.Fatal(err)
	}
	return sub
}

// refusals collects a channel's refusals.
type refusals struct {
	mu   sync.Mutex
	errs []error
	note chan struct{}
}

func newRefusals() *refusals { return &refusals{note: make(chan struct{}, 1000)} }

func (r *refusals) option() client.ChannelOption {
	return client.WithRefusals(func(_ *nats.Msg, err error) {
		r.mu.Lock()
		r.errs = append(r.errs, err)
		r.mu.Unlock()
		r.note <- struct{}{}
	})
}

// next waits for the next refusal and checks its kind.
func (r *refusals) next(t *testing.T, ctx context.Context, what string, want error) {
	t.Helper()
	select {
	case <-r.note:
	case <-ctx.Done():
		t.Fatalf("%s: no refusal", what)
	}
	r.mu.Lock()
	err := r.errs[0]
	r.errs = r.errs[1:]
	r.mu.Unlock()
	if !errors.Is(err, want) {
		t.Fatalf("%s: refused with %v, want %v", what, err, want)
	}
}

// TestChannelExchange: two members talk through a real nats-server
// (handler, Next and request/reply forms); a registered identity with
// access to the subject but no membership can open no channel and reads
// nothing from the raw bytes.
func TestChannelExchange(t *testing.T) {
	w := newChannelWorld(t)
	alice, bob, eve := w.member("alice"), w.member("bob"), w.member("eve")
	if _, _, err := alice.CreateRoom(w.ctx, "ops", "chat.ops", []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	ach, bch := w.channel(alice, "ops"), w.channel(bob, "ops")

	got := make(chan *client.Message, 10)
	if _, err := bch.Subscribe(w.ctx, func(m *client.Message) { got <- m }); err != nil {
		t.Fatal(err)
	}
	next, err := ach.SubscribeSync(w.ctx)
	if err != nil {
		t.Fatal(err)
	}
	evesub := w.raw(natstest.Connect(t, w.s), "chat.ops")
	secret := []byte("the launch code is 0000")
	id, err := ach.Publish(w.ctx, secret)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if !bytes.Equal(m.Data, secret) || m.Sender != "alice" || m.Epoch != 1 || m.ID != id || m.Room != "ops" {
			t.Fatalf("bob got %+v", m)
		}
	case <-w.ctx.Done():
		t.Fatal("bob got nothing")
	}
	if m, err := next.Next(w.ctx); err != nil || !bytes.Equal(m.Data, secret) {
		t.Fatalf("alice's Next: %v %v", m, err)
	}
	// The iterator form, on bob's message.
	if _, err := bch.Publish(w.ctx, []byte("from bob")); err != nil {
		t.Fatal(err)
	}
	for m, err := range next.Messages(w.ctx) {
		if err != nil || string(m.Data) != "from bob" || m.Sender != "bob" {
			t.Fatalf("alice's iterator: %+v, %v", m, err)
		}
		break
	}
	recv(t, w.ctx, got) // bob's own message reaches his handler too

	// Request/reply: bob answers on the room subject, alice gets the reply.
	if _, err := bch.Subscribe(w.ctx, func(m *client.Message) {
		if string(m.Data) == "ping" {
			_ = m.Respond(w.ctx, []byte("pong from "+m.Sender))
		}
	}); err != nil {
		t.Fatal(err)
	}
	reply, err := ach.Request(w.ctx, []byte("ping"))
	if err != nil || string(reply.Data) != "pong from alice" || reply.Sender != "bob" {
		t.Fatalf("request: %+v, %v", reply, err)
	}

	// eve: registered, subscribed to the subject, not a member.
	if _, err := eve.Channel(w.ctx, "ops"); !errors.Is(err, client.ErrForbidden) {
		t.Fatalf("eve opens the channel: %v, want forbidden", err)
	}
	if _, _, err := eve.Key(w.ctx, "ops", 1); !errors.Is(err, client.ErrForbidden) {
		t.Fatalf("eve fetches the key: %v, want forbidden", err)
	}
	m, err := evesub.NextMsg(channelWait)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(m.Data, secret) || bytes.Contains(m.Data, []byte("launch")) {
		t.Fatal("the raw message carries the plaintext")
	}
	// Without reply verification there is no channel.
	if _, err := client.New(natstest.Connect(t, w.s), w.ids["bob"], client.WithUnverifiedReplies()).Channel(w.ctx, "ops"); !errors.Is(err, client.ErrChannelUnpinned) {
		t.Fatalf("unpinned: %v", err)
	}
}

// TestChannelRemovedMember: after room.remove and the owner's rekey, the
// members' channels move to the new epoch without a restart and the removed
// member reads nothing new, through its channel or the raw subject with
// every key it ever held; its own messages are refused.
func TestChannelRemovedMember(t *testing.T) {
	w := newChannelWorld(t)
	alice, bob, carol := w.member("alice"), w.member("bob"), w.member("carol")
	_, key1, err := alice.CreateRoom(w.ctx, "ops", "chat.ops", []string{"bob", "carol"})
	if err != nil {
		t.Fatal(err)
	}
	ach := w.channel(alice, "ops")
	bref := newRefusals()
	bch := w.channel(bob, "ops", bref.option())
	cch := w.channel(carol, "ops")
	got := make(chan *client.Message, 100)
	if _, err := bch.Subscribe(w.ctx, func(m *client.Message) { got <- m }); err != nil {
		t.Fatal(err)
	}
	cgot := make(chan *client.Message, 100)
	if _, err := cch.Subscribe(w.ctx, func(m *client.Message) { cgot <- m }); err != nil {
		t.Fatal(err)
	}
	rawsub := w.raw(natstest.Connect(t, w.s), "chat.ops")
	if _, err := ach.Publish(w.ctx, []byte("before")); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, w.ctx, cgot); string(m.Data) != "before" {
		t.Fatalf("carol before removal: %q", m.Data)
	}
	recv(t, w.ctx, got)
	if _, err := rawsub.NextMsg(channelWait); err != nil {
		t.Fatal(err)
	}

	if _, err := alice.RemoveMember(w.ctx, "ops", "carol"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := alice.Rekey(w.ctx, "ops"); err != nil {
		t.Fatal(err)
	}
	// alice's channel picks the rekey up by itself within its refresh
	// interval; bob's learns it from the first message of epoch 2.
	for {
		if _, err := ach.Publish(w.ctx, []byte("after")); err != nil {
			t.Fatal(err)
		}
		if m := recv(t, w.ctx, got); m.Epoch == 2 {
			break
		}
	}
	// The raw subject: everything sent after the rekey (epoch 2) does not
	// open with carol's epoch-1 key, and the service gives her no other.
	seen2 := false
	var lastRaw *wireMsg
	for !seen2 {
		m, err := rawsub.NextMsg(channelWait)
		if err != nil {
			t.Fatal(err)
		}
		if lastRaw, err = parseWire(m.Data); err != nil {
			t.Fatal(err)
		}
		if lastRaw.epoch == 2 {
			seen2 = true
			if bytes.Contains(m.Data, []byte("after")) {
				t.Fatal("plaintext on the subject")
			}
		} else if _, err := lastRaw.open(key1); err != nil {
			t.Fatalf("an epoch-1 message does not open with the epoch-1 key: %v", err)
		}
	}
	if _, _, err := carol.Key(w.ctx, "ops", 2); !errors.Is(err, client.ErrForbidden) {
		t.Fatalf("carol fetches epoch 2: %v", err)
	}
	if _, err := lastRaw.open(key1); err == nil {
		t.Fatal("carol's epoch-1 key opens an epoch-2 message")
	}
	select {
	case m := <-cgot:
		if m.Epoch >= 2 {
			t.Fatalf("carol read an epoch-2 message: %q", m.Data)
		}
	default:
	}
	// carol still publishes with her cached epoch-1 key: bob refuses it.
	if _, err := cch.Publish(w.ctx, []byte("still here")); err == nil {
		bref.next(t, w.ctx, "removed member's message", client.ErrChannelNotMember)
	} else if !errors.Is(err, client.ErrForbidden) {
		t.Fatalf("carol publishes: %v", err)
	}
}

// TestChannelRefusals: bob's channel refuses tampered, moved (other room,
// other epoch), re-signed and replayed messages, messages from a
// non-member, from a member of another epoch, of an unknown epoch and
// outside the replay window; a message built from the document alone is
// accepted.
func TestChannelRefusals(t *testing.T) {
	w := newChannelWorld(t)
	alice, bob := w.member("alice"), w.member("bob")
	w.member("dave")
	w.member("eve")
	for _, r := range []string{"ops", "dev"} {
		if _, _, err := alice.CreateRoom(w.ctx, r, "chat."+r, []string{"bob"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := alice.Rekey(w.ctx, "ops"); err != nil { // ops at epoch 2
		t.Fatal(err)
	}
	if _, err := alice.AddMember(w.ctx, "ops", "dave"); err != nil { // dave: since 2
		t.Fatal(err)
	}
	key2, _, err := alice.Key(w.ctx, "ops", 2)
	if err != nil {
		t.Fatal(err)
	}
	ach := w.channel(alice, "ops")
	ops := newRefusals()
	bch := w.channel(bob, "ops", ops.option())
	dev := newRefusals()
	bdev := w.channel(bob, "dev", dev.option())
	got := make(chan *client.Message, 10)
	for _, ch := range []*client.Channel{bch, bdev} {
		if _, err := ch.Subscribe(w.ctx, func(m *client.Message) { got <- m }); err != nil {
			t.Fatal(err)
		}
	}
	nc := natstest.Connect(t, w.s)
	rawsub := w.raw(nc, "chat.ops")
	delivered := func(what string, data []byte) {
		t.Helper()
		select {
		case m := <-got:
			if !bytes.Equal(m.Data, data) {
				t.Fatalf("%s: got %q", what, m.Data)
			}
		case <-w.ctx.Done():
			t.Fatalf("%s: not delivered", what)
		}
	}
	pub := func(subject string, b []byte) {
		t.Helper()
		if err := nc.Publish(subject, b); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ach.Publish(w.ctx, []byte("genuine")); err != nil {
		t.Fatal(err)
	}
	delivered("genuine", []byte("genuine"))
	raw, err := rawsub.NextMsg(channelWait)
	if err != nil {
		t.Fatal(err)
	}
	g, err := parseWire(raw.Data)
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := g.open(key2); err != nil || string(pt) != "genuine" {
		t.Fatalf("the document's decoder opens the client's message: %q, %v", pt, err)
	}
	alter := func(change func(m *wireMsg)) []byte {
		m, _ := parseWire(raw.Data)
		change(m)
		return m.bytes()
	}
	kp := func(name string) nkeys.KeyPair { return w.ids[name].Sign }

	cases := []struct {
		name    string
		subject string
		data    []byte
		refs    *refusals
		want    error
	}{
		{"replayed", "chat.ops", raw.Data, ops, client.ErrChannelReplay},
		{"tampered ciphertext", "chat.ops", alter(func(m *wireMsg) { m.ct[0] ^= 1 }), ops, client.ErrChannelSignature},
		{"moved to epoch 1", "chat.ops", alter(func(m *wireMsg) { m.epoch = 1 }), ops, client.ErrChannelSignature},
		{"moved to room dev", "chat.dev", raw.Data, dev, client.ErrChannelMisplaced},
		{"re-signed by dave as alice", "chat.ops", alter(func(m *wireMsg) { m.sign(t, kp("dave"), "") }), ops, client.ErrChannelSignature},
		{"re-signed by dave as dave", "chat.ops", alter(func(m *wireMsg) { m.sender = "dave"; m.sign(t, kp("dave"), "") }), ops, client.ErrChannelOpen},
		{"dave (since 2) at epoch 1", "chat.ops", newWire("ops", 1, "dave").seal(make([]byte, 32), []byte("x")).sign(t, kp("dave"), "").bytes(), ops, client.ErrChannelEpoch},
		{"eve, no member", "chat.ops", newWire("ops", 2, "eve").seal(key2, []byte("x")).sign(t, kp("eve"), "").bytes(), ops, client.ErrChannelNotMember},
		{"alice at unknown epoch 7", "chat.ops", newWire("ops", 7, "alice").seal(key2, []byte("x")).sign(t, kp("alice"), "").bytes(), ops, client.ErrChannelUnknown},
		{"stale", "chat.ops", func() []byte {
			m := newWire("ops", 2, "alice")
			m.ts -= (client.DefaultReplayWindow + time.Second).Milliseconds()
			return m.seal(key2, []byte("x")).sign(t, kp("alice"), "").bytes()
		}(), ops, client.ErrChannelStale},
		{"truncated", "chat.ops", raw.Data[:len(raw.Data)-1], ops, client.ErrChannelMalformed},
	}
	for _, tc := range cases {
		pub(tc.subject, tc.data)
		tc.refs.next(t, w.ctx, tc.name, tc.want)
	}
	// Built from the document alone, by alice with her key: accepted.
	pub("chat.ops", newWire("ops", 2, "alice").seal(key2, []byte("from the spec")).sign(t, kp("alice"), "").bytes())
	delivered("document-built message", []byte("from the spec"))
	// A frame built from the document: its messages delivered in order;
	// the same frame replayed, or sent by a non-member, refused whole.
	frame := newWireFrame("ops", 2, "alice", 2).seal(key2, frameEntries("frame 1", "frame 2")).sign(t, kp("alice"), "").bytes()
	pub("chat.ops", frame)
	delivered("document-built frame, first", []byte("frame 1"))
	delivered("document-built frame, second", []byte("frame 2"))
	pub("chat.ops", frame)
	ops.next(t, w.ctx, "frame replayed", client.ErrChannelReplay)
	pub("chat.ops", newWireFrame("ops", 2, "eve", 2).seal(key2, frameEntries("a", "b")).sign(t, kp("eve"), "").bytes())
	ops.next(t, w.ctx, "frame from eve, no member", client.ErrChannelNotMember)
	if n := bch.Refused() + bdev.Refused(); n != int64(len(cases)+2) {
		t.Fatalf("refused %d, want %d", n, len(cases)+2)
	}

	// An older epoch: bob (member since 1) fetches his epoch-1 key and
	// opens a late epoch-1 message; dave (since 2) has no epoch-1 key.
	daveRefs := newRefusals()
	dch := w.channel(w.pinned("dave"), "ops", daveRefs.option())
	if _, err := dch.Subscribe(w.ctx, func(m *client.Message) { got <- m }); err != nil {
		t.Fatal(err)
	}
	key1, _, err := alice.Key(w.ctx, "ops", 1)
	if err != nil {
		t.Fatal(err)
	}
	pub("chat.ops", newWire("ops", 1, "alice").seal(key1, []byte("late, epoch 1")).sign(t, kp("alice"), "").bytes())
	delivered("bob opens an epoch-1 message", []byte("late, epoch 1"))
	daveRefs.next(t, w.ctx, "dave, no epoch-1 key", client.ErrChannelUnknown)
}

// TestChannelVerifiers: with parallel verifiers the handler still gets
// every message once, in publish order, and a copy is still refused.
func TestChannelVerifiers(t *testing.T) {
	w := newChannelWorld(t)
	alice, bob := w.member("alice"), w.member("bob")
	if _, _, err := alice.CreateRoom(w.ctx, "ops", "chat.ops", []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	ach := w.channel(alice, "ops")
	refs := newRefusals()
	bch := w.channel(bob, "ops", client.WithVerifiers(4), refs.option())
	const n = 300
	got := make(chan *client.Message, n+1)
	sub, err := bch.Subscribe(w.ctx, func(m *client.Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	raw := w.raw(natstest.Connect(t, w.s), "chat.ops")
	for i := range n {
		if _, err := ach.Publish(w.ctx, []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		if m := recv(t, w.ctx, got); string(m.Data) != strconv.Itoa(i) {
			t.Fatalf("message %d is %q: out of order", i, m.Data)
		}
	}
	first, err := raw.NextMsg(channelWait)
	if err != nil {
		t.Fatal(err)
	}
	if err := natstest.Connect(t, w.s).Publish("chat.ops", first.Data); err != nil {
		t.Fatal(err)
	}
	refs.next(t, w.ctx, "copy", client.ErrChannelReplay)
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
}

// TestChannelBatching: with WithBatching alice's messages travel as
// frames (fewer NATS messages than channel messages) that the document's
// decoder opens; bob receives every message once, in publish order, by
// handler, by Next and with 3 parallel verifiers; a frame replayed whole is refused, and so is a
// frame alice built with a wrong entry (delivered whole or not at all).
// Close flushes and ends publishing.
func TestChannelBatching(t *testing.T) {
	w := newChannelWorld(t)
	alice, bob := w.member("alice"), w.member("bob")
	if _, _, err := alice.CreateRoom(w.ctx, "ops", "chat.ops", []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	key1, _, err := alice.Key(w.ctx, "ops", 1)
	if err != nil {
		t.Fatal(err)
	}
	ach := w.channel(alice, "ops", client.WithBatching(16, time.Millisecond))
	refs := newRefusals()
	bch := w.channel(bob, "ops", refs.option())
	const n = 100
	got := make(chan *client.Message, n+10)
	if _, err := bch.Subscribe(w.ctx, func(m *client.Message) { got <- m }); err != nil {
		t.Fatal(err)
	}
	next, err := bch.SubscribeSync(w.ctx)
	if err != nil {
		t.Fatal(err)
	}
	par := make(chan *client.Message, n+10)
	if _, err := w.channel(w.pinned("bob"), "ops", client.WithVerifiers(3)).Subscribe(w.ctx, func(m *client.Message) { par <- m }); err != nil {
		t.Fatal(err)
	}
	raw := w.raw(natstest.Connect(t, w.s), "chat.ops")
	ids := make([]client.MessageID, n)
	for i := range n {
		if ids[i], err = ach.Publish(w.ctx, []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := ach.Flush(w.ctx); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		m := recv(t, w.ctx, got)
		if string(m.Data) != strconv.Itoa(i) || m.ID != ids[i] {
			t.Fatalf("handler: message %d is %q (id %s): out of order", i, m.Data, m.ID)
		}
		if m, err := next.Next(w.ctx); err != nil || string(m.Data) != strconv.Itoa(i) {
			t.Fatalf("Next: message %d is %v, %v", i, m, err)
		}
		if m := recv(t, w.ctx, par); string(m.Data) != strconv.Itoa(i) {
			t.Fatalf("3 verifiers: message %d is %q: out of order", i, m.Data)
		}
	}
	frames, carried := 0, 0
	var firstFrame []byte
	for carried < n {
		msg, err := raw.NextMsg(channelWait)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parseWire(msg.Data)
		if err != nil {
			t.Fatalf("frame %d does not decode from the document: %v", frames, err)
		}
		pt, err := f.open(key1)
		if err != nil {
			t.Fatal(err)
		}
		if f.ids == nil {
			carried++
			continue
		}
		if firstFrame == nil {
			firstFrame = msg.Data
		}
		frames++
		carried += len(splitEntries(pt))
	}
	if frames == 0 || frames > n/2 {
		t.Fatalf("%d messages in %d frames: not batched", n, frames)
	}
	pub := natstest.Connect(t, w.s)
	if err := pub.Publish("chat.ops", firstFrame); err != nil {
		t.Fatal(err)
	}
	refs.next(t, w.ctx, "frame replayed whole", client.ErrChannelReplay)
	bad := newWireFrame("ops", 1, "alice", 3).seal(key1, frameEntries("x", "y")).sign(t, w.ids["alice"].Sign, "").bytes()
	if err := pub.Publish("chat.ops", bad); err != nil {
		t.Fatal(err)
	}
	refs.next(t, w.ctx, "three ids, two entries", client.ErrChannelMalformed)
	if _, err := ach.Publish(w.ctx, []byte("last")); err != nil {
		t.Fatal(err)
	}
	if err := ach.Close(w.ctx); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, w.ctx, got); string(m.Data) != "last" {
		t.Fatalf("after Close: %q", m.Data)
	}
	if _, err := ach.Publish(w.ctx, []byte("too late")); !errors.Is(err, client.ErrChannelClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
	if len(got) != 0 || bch.Refused() != 2 {
		t.Fatalf("%d more delivered, %d refused", len(got), bch.Refused())
	}
}

// TestChannelReplayMemory: a subscription remembers at most its bound of
// ids (WithReplayMemory; one full frame at least). Past it the oldest are
// forgotten, and a replay of a forgotten frame is refused as stale rather
// than delivered again, while every message sent was delivered once.
func TestChannelReplayMemory(t *testing.T) {
	w := newChannelWorld(t)
	alice, bob := w.member("alice"), w.member("bob")
	if _, _, err := alice.CreateRoom(w.ctx, "ops", "chat.ops", []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	ach := w.channel(alice, "ops", client.WithBatching(1<<16, time.Hour))
	refs := newRefusals()
	bch := w.channel(bob, "ops", client.WithReplayMemory(0), refs.option())
	const n = 3 << 16 // three times the smallest bound
	var delivered atomic.Int64
	all := make(chan struct{})
	if _, err := bch.Subscribe(w.ctx, func(*client.Message) {
		if delivered.Add(1) == n {
			close(all)
		}
	}); err != nil {
		t.Fatal(err)
	}
	raw := w.raw(natstest.Connect(t, w.s), "chat.ops")
	for range n {
		if _, err := ach.Publish(w.ctx, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := ach.Flush(w.ctx); err != nil {
		t.Fatal(err)
	}
	first, err := raw.NextMsg(channelWait)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-all:
	case <-w.ctx.Done():
		t.Fatalf("%d of %d delivered", delivered.Load(), n)
	}
	if err := natstest.Connect(t, w.s).Publish("chat.ops", first.Data); err != nil {
		t.Fatal(err)
	}
	refs.next(t, w.ctx, "a forgotten frame replayed", client.ErrChannelStale)
	if got := delivered.Load(); got != n || bch.Refused() != 1 {
		t.Fatalf("%d of %d delivered, %d refused", got, n, bch.Refused())
	}
}

// TestChannelPendingLimits: a subscription's pending limits are NATS's:
// past them a slow handler loses whole messages and the connection's error
// handler hears of it, and the messages within them are delivered.
func TestChannelPendingLimits(t *testing.T) {
	w := newChannelWorld(t)
	alice, _ := w.member("alice"), w.member("bob")
	if _, _, err := alice.CreateRoom(w.ctx, "ops", "chat.ops", []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	slow := make(chan error, 10)
	bob := client.New(natstest.Connect(t, w.s, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { slow <- err })), w.ids["bob"], w.pin)
	ach, bch := w.channel(alice, "ops"), w.channel(bob, "ops")
	held, release := make(chan struct{}, 10), make(chan struct{})
	got := make(chan *client.Message, 10)
	sub, err := bch.Subscribe(w.ctx, func(m *client.Message) { held <- struct{}{}; <-release; got <- m })
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(2, -1); err != nil { // the message in the handler counts
		t.Fatal(err)
	}
	publish := func(m string) {
		if _, err := ach.Publish(w.ctx, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	publish("held by the handler")
	select {
	case <-held:
	case <-w.ctx.Done():
		t.Fatal("nothing delivered")
	}
	publish("pending")
	publish("dropped")
	select {
	case err := <-slow:
		if !errors.Is(err, nats.ErrSlowConsumer) {
			t.Fatalf("error handler: %v", err)
		}
	case <-w.ctx.Done():
		t.Fatal("no slow consumer reported")
	}
	close(release)
	for _, want := range []string{"held by the handler", "pending"} {
		if m := recv(t, w.ctx, got); string(m.Data) != want {
			t.Fatalf("delivered %q, want %q", m.Data, want)
		}
	}
	publish("after")
	if m := recv(t, w.ctx, got); string(m.Data) != "after" {
		t.Fatalf("delivered %q after the drop, want \"after\"", m.Data)
	}
}

// TestChannelBatchingMaxPayload: a frame is sent before the next message
// would take it past the server's max_payload, and the rest waits for
// Flush when neither max nor linger is reached.
func TestChannelBatchingMaxPayload(t *testing.T) {
	w := newChannelWorld(t)
	alice, bob := w.member("alice"), w.member("bob")
	if _, _, err := alice.CreateRoom(w.ctx, "ops", "chat.ops", []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	ach := w.channel(alice, "ops", client.WithBatching(100, time.Hour))
	got := make(chan *client.Message, 10)
	if _, err := w.channel(bob, "ops").Subscribe(w.ctx, func(m *client.Message) { got <- m }); err != nil {
		t.Fatal(err)
	}
	nc := natstest.Connect(t, w.s)
	raw := w.raw(nc, "chat.ops")
	size := int(nc.MaxPayload()) * 2 / 5 // two fit in a frame, three do not
	for i := range 3 {
		if _, err := ach.Publish(w.ctx, bytes.Repeat([]byte{byte('a' + i)}, size)); err != nil {
			t.Fatal(err)
		}
	}
	first, err := raw.NextMsg(channelWait)
	if err != nil {
		t.Fatal(err)
	}
	if f, err := parseWire(first.Data); err != nil || len(f.ids) != 2 {
		t.Fatalf("first frame: %v, %d ids", err, len(f.ids))
	}
	if err := ach.Flush(w.ctx); err != nil { // linger is an hour: only Flush sends the third
		t.Fatal(err)
	}
	second, err := raw.NextMsg(channelWait)
	if err != nil {
		t.Fatal(err)
	}
	if f, err := parseWire(second.Data); err != nil || f.ids != nil {
		t.Fatalf("the third message alone is no single message: %v", err)
	}
	for i := range 3 {
		if m := recv(t, w.ctx, got); len(m.Data) != size || m.Data[0] != byte('a'+i) {
			t.Fatalf("message %d: %d bytes of %q", i, len(m.Data), m.Data[:1])
		}
	}
}

// wireMsg is a channel message written from docs/protocol.md §19 alone,
// independently of the client package: the tests forge, alter and open
// messages with it, and a message it builds must be accepted.
type wireMsg struct {
	kind   byte
	room   string
	epoch  uint64
	sender string
	ts     int64
	nonce  [24]byte
	ids    [][24]byte // a frame's (version 2) message ids; nonce is the first
	re     []byte
	ct     []byte
	sig    []byte
}

func (m *wireMsg) header() []byte {
	version := byte(1)
	if m.ids != nil {
		version = 2
	}
	b := []byte{version, m.kind, byte(len(m.room))}
	b = append(b, m.room...)
	b = binary.BigEndian.AppendUint64(b, m.epoch)
	b = append(b, byte(len(m.sender)))
	b = append(b, m.sender...)
	b = binary.BigEndian.AppendUint64(b, uint64(m.ts))
	if m.ids != nil {
		b = binary.BigEndian.AppendUint16(b, uint16(len(m.ids)))
		for _, id := range m.ids {
			b = append(b, id[:]...)
		}
		return b
	}
	b = append(b, m.nonce[:]...)
	return append(b, m.re...)
}

func (m *wireMsg) bytes() []byte {
	b := binary.BigEndian.AppendUint32(m.header(), uint32(len(m.ct)))
	return append(append(b, m.ct...), m.sig...)
}

func field(b, f []byte) []byte { return append(binary.BigEndian.AppendUint32(b, uint32(len(f))), f...) }

func (m *wireMsg) sign(t *testing.T, kp nkeys.KeyPair, reply string) *wireMsg {
	label, ct := "unibus-channel-message-v1", m.ct
	if m.ids != nil { // a frame signs the ciphertext's SHA-256
		sum := sha256.Sum256(m.ct)
		label, ct = "unibus-channel-frame-v2", sum[:]
	}
	c := field(field(field(field(nil, []byte(label)), m.header()), []byte(reply)), ct)
	var err error
	if m.sig, err = kp.Sign(c); err != nil {
		t.Fatal(err)
	}
	return m
}

func wireAEAD(roomKey []byte) cipher.AEAD {
	k, err := hkdf.Key(sha256.New, roomKey, nil, "unibus-channel-key-v1", 32)
	if err != nil {
		panic(err)
	}
	a, err := chacha20poly1305.NewX(k)
	if err != nil {
		panic(err)
	}
	return a
}

func (m *wireMsg) seal(roomKey, plaintext []byte) *wireMsg {
	m.ct = wireAEAD(roomKey).Seal(nil, m.nonce[:], plaintext, m.header())
	return m
}

func (m *wireMsg) open(roomKey []byte) ([]byte, error) {
	return wireAEAD(roomKey).Open(nil, m.nonce[:], m.ct, m.header())
}

func parseWire(b []byte) (*wireMsg, error) {
	bad := errors.New("malformed channel message")
	b = bytes.Clone(b) // fields alias it and may be altered
	m := &wireMsg{}
	take := func(n int) []byte {
		if n > len(b) {
			b = nil
			return make([]byte, n)
		}
		f := b[:n]
		b = b[n:]
		return f
	}
	v := take(1)[0]
	if v != 1 && v != 2 {
		return nil, bad
	}
	m.kind = take(1)[0]
	m.room = string(take(int(take(1)[0])))
	m.epoch = binary.BigEndian.Uint64(take(8))
	m.sender = string(take(int(take(1)[0])))
	m.ts = int64(binary.BigEndian.Uint64(take(8)))
	if v == 2 {
		m.ids = make([][24]byte, binary.BigEndian.Uint16(take(2)))
		for i := range m.ids {
			copy(m.ids[i][:], take(24))
		}
		if len(m.ids) < 2 {
			return nil, bad
		}
		m.nonce = m.ids[0]
	} else {
		copy(m.nonce[:], take(24))
	}
	if m.kind == 1 {
		m.re = take(24)
	}
	n := int(binary.BigEndian.Uint32(take(4)))
	m.ct = take(n)
	m.sig = take(64)
	if b == nil || len(b) != 0 {
		return nil, bad
	}
	return m, nil
}

// newWireFrame is a fresh frame of n messages of room at epoch from
// sender, stamped now.
func newWireFrame(room string, epoch uint64, sender string, n int) *wireMsg {
	m := newWire(room, epoch, sender)
	m.ids = make([][24]byte, n)
	for i := range m.ids {
		_, _ = rand.Read(m.ids[i][:])
	}
	m.nonce = m.ids[0]
	return m
}

// frameEntries is a frame's plaintext: u32be length then data, per message.
func frameEntries(msgs ...string) []byte {
	var b []byte
	for _, d := range msgs {
		b = append(binary.BigEndian.AppendUint32(b, uint32(len(d))), d...)
	}
	return b
}

// splitEntries is frameEntries undone, or nil if the entries do not add up.
func splitEntries(b []byte) []string {
	var out []string
	for len(b) >= 4 {
		n := int(binary.BigEndian.Uint32(b))
		if n > len(b)-4 {
			return nil
		}
		out = append(out, string(b[4:4+n]))
		b = b[4+n:]
	}
	if len(b) != 0 {
		return nil
	}
	return out
}

// newWire is a fresh message of room at epoch from sender, stamped now.
func newWire(room string, epoch uint64, sender string) *wireMsg {
	m := &wireMsg{room: room, epoch: epoch, sender: sender, ts: time.Now().UnixMilli()}
	_, _ = rand.Read(m.nonce[:])
	return m
}

// TestMemberctlChannel: `memberctl room sub` streams what `memberctl room
// pub` sends, as JSON lines, including after a rekey, stops after --count
// or on SIGINT with exit 0, and refuses to run without a pinned service key.
func TestMemberctlChannel(t *testing.T) {
	spub := membertest.ServicePub()
	s := natstest.Server(t)
	membertest.Service(t, s, service.Config{})
	c := &ctl{t: t, bin: natstest.Build(t, memberctlPkg), dir: t.TempDir(), server: s.ClientURL()}
	id, err := identity.New("admin")
	if err != nil {
		t.Fatal(err)
	}
	if err := identity.Write(c.path("admin.id"), id); err != nil {
		t.Fatal(err)
	}
	pub, _ := id.Public()
	ctx, cancel := context.WithTimeout(context.Background(), channelWait)
	defer cancel()
	if _, err := service.Bootstrap(ctx, membertest.Store(t, natstest.Connect(t, s)), pub); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"alice", "bob"} {
		c.keygen(name)
		c.ok(nil, "--identity", "admin.id", "identity", "register", "--pub", name+".pub")
	}
	c.ok(nil, "--identity", "alice.id", "room", "create", "ops", "--subject", "chat.ops", "--member", "bob")
	key := []string{"--service-key", spub}

	sub := c.start(ctx, append([]string{"--identity", "bob.id", "room", "sub", "ops", "--json", "--count", "3"}, key...)...)
	var out channelLine
	// As in the README: the key from the environment.
	if r := c.runEnv([]string{"MEMBERCTL_SERVICE_KEY=" + spub}, "--identity", "alice.id", "room", "pub", "ops", "hello"); r.code != 0 ||
		!strings.Contains(r.stdout, "epoch") {
		t.Fatalf("room pub: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	c.ok(&out, append([]string{"--identity", "alice.id", "room", "pub", "ops", "wörld", "--json"}, key...)...)
	if out.Room != "ops" || out.Epoch != 1 || len(out.ID) != 48 {
		t.Fatalf("pub printed %+v", out)
	}
	c.ok(nil, "--identity", "alice.id", "room", "rekey", "ops")
	c.ok(&out, append([]string{"--identity", "alice.id", "room", "pub", "ops", "after rekey", "--json"}, key...)...)
	lines := sub.wait(t, 0)
	want := []channelLine{{Room: "ops", Epoch: 1, Sender: "alice", Data: "hello"}, {Room: "ops", Epoch: 1, Sender: "alice", Data: "wörld"},
		{Room: "ops", Epoch: 2, Sender: "alice", Data: "after rekey"}}
	if len(lines) != len(want) {
		t.Fatalf("room sub printed %d lines: %q", len(lines), lines)
	}
	for i, l := range lines {
		var got channelLine
		if err := json.Unmarshal([]byte(l), &got); err != nil {
			t.Fatalf("line %d is not JSON: %q", i, l)
		}
		if got.Room != want[i].Room || got.Epoch != want[i].Epoch || got.Sender != want[i].Sender || got.Data != want[i].Data || got.Time == "" || len(got.ID) != 48 {
			t.Fatalf("line %d: %+v, want %+v", i, got, want[i])
		}
	}

	// Ctrl-C stops a subscription without --count, with exit 0.
	sub = c.start(ctx, append([]string{"--identity", "bob.id", "room", "sub", "ops"}, key...)...)
	if err := sub.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	sub.wait(t, 0)

	c.fails(exitUsage, regexp.MustCompile(`^memberctl: room sub: cannot run with --insecure-no-verify`),
		"--identity", "bob.id", "room", "sub", "ops", "--insecure-no-verify")
}

// channelLine is one line of `room sub --json`.
type channelLine struct {
	Room   string `json:"room"`
	Epoch  uint64 `json:"epoch"`
	Sender string `json:"sender"`
	ID     string `json:"id"`
	Time   string `json:"time"`
	Data   string `json:"data"`
}

// ctlProc is a memberctl run in the background.
type ctlProc struct {
	cmd    *exec.Cmd
	stdout bytes.Buffer
	done   chan error
}

// start runs memberctl in the background and returns once it printed its
// "listening on" note on stderr.
func (c *ctl) start(ctx context.Context, args ...string) *ctlProc {
	c.t.Helper()
	p := &ctlProc{cmd: exec.CommandContext(ctx, c.bin, append([]string{"--server", c.server}, args...)...), done: make(chan error, 1)}
	p.cmd.Dir = c.dir
	p.cmd.Env = append(os.Environ(), "NATS_URL=", "MEMBERCTL_IDENTITY=", "MEMBERCTL_SERVICE_KEY=", "XDG_CONFIG_HOME="+c.path("xdg"))
	p.cmd.Stdout = &p.stdout
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	sc := bufio.NewScanner(stderr)
	var said []string
	for sc.Scan() {
		said = append(said, sc.Text())
		if strings.Contains(sc.Text(), "listening on") {
			go func() { _, _ = io.Copy(io.Discard, stderr); p.done <- p.cmd.Wait() }()
			return p
		}
	}
	c.t.Fatalf("memberctl %v ended without listening: %v\n%s", args, p.cmd.Wait(), strings.Join(said, "\n"))
	return nil
}

// wait waits for the run to end with exit code want and returns its
// stdout lines.
func (p *ctlProc) wait(t *testing.T, want int) []string {
	t.Helper()
	err := <-p.done
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if code != want {
		t.Fatalf("memberctl exited %d, want %d; stdout: %s", code, want, p.stdout.String())
	}
	return strings.Split(strings.TrimSpace(p.stdout.String()), "\n")
}
