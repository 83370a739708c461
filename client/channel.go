package client

import (
	"context"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/api"
)

// Channel defaults.
const (
	// DefaultReplayWindow bounds how far a message's ts may lie from the
	// receiver's clock; message ids are remembered for twice as long, so a
	// copy is refused either as stale or as seen.
	DefaultReplayWindow = time.Minute
	// DefaultRefreshAfter is how old the room's epoch and member list may
	// get before the next publish or delivery reads them again: the bound
	// on how long a publisher keeps sealing to an epoch after a rekey, and
	// on how long a removed member's messages are still accepted when the
	// owner did not rekey.
	DefaultRefreshAfter = time.Second
	// channelMinRefresh bounds how often messages from unknown senders
	// make the channel read the member list again: anyone with access to
	// the subject can send them, so they must not turn into a flood of
	// requests to the service.
	channelMinRefresh = 100 * time.Millisecond
)

// MessageID identifies a channel message: its random 24-byte nonce.
type MessageID [channelNonceSize]byte

// String is the id in hex.
func (id MessageID) String() string { return hex.EncodeToString(id[:]) }

// Message is a channel message that verified and opened.
type Message struct {
	Room   string
	Epoch  uint64
	Sender string // endpoint id, a member of Room at Epoch
	ID     MessageID
	Time   time.Time // the sender's clock
	Data   []byte

	reply string // NATS reply subject of a request, signed by the sender
	ch    *Channel
}

// Respond answers a request received on the channel with a sealed, signed
// reply bound to the request's id. It fails on a message that asked for no
// reply.
func (m *Message) Respond(ctx context.Context, data []byte) error {
	if m.reply == "" {
		return errors.New("channel: the message asked for no reply")
	}
	_, err := m.ch.publish(ctx, m.reply, channelKindReply, m.ID[:], "", data)
	return err
}

// Channel publishes and receives sealed, signed messages on one room's
// subject (docs/protocol.md §19). It fetches its own sealed key of each
// epoch it meets through the service and keeps it; the member list that
// decides who may send comes from replies signed by the pinned service key.
// A Channel is safe for concurrent use.
type Channel struct {
	c            *Client
	room         string
	subject      string
	window       time.Duration
	replayMemory int // WithReplayMemory (channel_replay.go)
	refreshAfter time.Duration
	onRefused    func(*nats.Msg, error)
	verifiers    int      // WithVerifiers (channel_parallel.go)
	batch        *batcher // WithBatching (channel_batch.go), or nil
	closed       atomic.Bool
	refused      atomic.Int64

	state     atomic.Pointer[channelState]
	refreshMu sync.Mutex // one refresh at a time
	keys      sync.Map   // epoch → *epochKey
}

// channelState is what the channel last read of the room; replaced whole.
type channelState struct {
	epoch   uint64
	updated int64 // room's Updated: a change means the member list may differ
	read    time.Time
	members map[string]channelMember
}

type channelMember struct {
	key   ed25519.PublicKey
	since uint64
}

// epochKey is an epoch's AEAD, or why this member has none (permanent
// refusals only, so a flood of one old epoch costs one request).
type epochKey struct {
	aead cipher.AEAD
	err  error
}

// ChannelOption configures a Channel.
type ChannelOption func(*Channel)

// WithReplayWindow sets how far a message's time may lie from this clock
// (default [DefaultReplayWindow]).
func WithReplayWindow(d time.Duration) ChannelOption { return func(ch *Channel) { ch.window = d } }

// WithRefreshAfter sets how old the room's epoch and member list may get
// before they are read again (default [DefaultRefreshAfter]).
func WithRefreshAfter(d time.Duration) ChannelOption {
	return func(ch *Channel) { ch.refreshAfter = d }
}

// WithRefusals sets a function told of every message the channel refused,
// with the reason (errors.Is one of the ErrChannel… sentinels, or the
// service error that stopped the check).
func WithRefusals(f func(msg *nats.Msg, err error)) ChannelOption {
	return func(ch *Channel) { ch.onRefused = f }
}

// Channel opens the channel of room. The client must verify replies (the
// default: a pinned key, [WithServiceKey], or one pinned on first use), else
// [ErrChannelUnpinned]; the caller must be a member of the room.
func (c *Client) Channel(ctx context.Context, room string, opts ...ChannelOption) (*Channel, error) {
	if c.unverified {
		return nil, ErrChannelUnpinned
	}
	ch := &Channel{c: c, room: room, window: DefaultReplayWindow, replayMemory: DefaultReplayMemory, refreshAfter: DefaultRefreshAfter}
	for _, o := range opts {
		o(ch)
	}
	r, err := c.Room(ctx, room)
	if err != nil {
		return nil, err
	}
	ch.subject = r.Subject
	if _, err := ch.refresh(ctx, time.Time{}); err != nil {
		return nil, err
	}
	return ch, nil
}

// Subject is the room's NATS subject.
func (ch *Channel) Subject() string { return ch.subject }

// Epoch is the room's current epoch as the channel last read it.
func (ch *Channel) Epoch() uint64 { return ch.state.Load().epoch }

// Refused counts the messages this channel refused.
func (ch *Channel) Refused() int64 { return ch.refused.Load() }

// Refresh reads the room's epoch and member list now, as after a rekey the
// caller made itself.
func (ch *Channel) Refresh(ctx context.Context) error {
	_, err := ch.refresh(ctx, time.Time{})
	return err
}

// Publish seals data under the current epoch's key, signs it and publishes
// it on the room's subject. It returns the message's id. With
// [WithBatching], it queues data for the next frame instead and returns
// the error of an earlier frame, if one failed since the last report.
func (ch *Channel) Publish(ctx context.Context, data []byte) (MessageID, error) {
	if ch.closed.Load() {
		return MessageID{}, ErrChannelClosed
	}
	if ch.batch != nil {
		return ch.batch.add(ctx, ch, data)
	}
	return ch.publish(ctx, ch.subject, channelKindMessage, nil, "", data)
}

// Request publishes data with a reply subject (signed with it) and returns
// the first reply that verifies, opens and answers this very request.
func (ch *Channel) Request(ctx context.Context, data []byte) (*Message, error) {
	nc := ch.c.nc
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := ch.Flush(ctx); err != nil { // queued messages go first
		return nil, err
	}
	id, err := ch.publish(ctx, ch.subject, channelKindMessage, nil, inbox, data)
	if err != nil {
		return nil, err
	}
	seen := ch.newReplayWindow()
	for {
		raw, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return nil, err
		}
		if len(raw.Data) == 0 && raw.Header.Get("Status") == "503" {
			return nil, nats.ErrNoResponders
		}
		ms, err := ch.open(ctx, seen, raw, channelKindReply, id[:])
		if err == nil {
			return ms[0], nil // a reply is never a frame
		}
		ch.refuse(raw, err)
	}
}

func (ch *Channel) publish(ctx context.Context, subject string, kind byte, re []byte, reply string, data []byte) (MessageID, error) {
	m := &channelMsg{kind: kind, re: re}
	if _, err := rand.Read(m.nonce[:]); err != nil {
		return MessageID{}, err
	}
	_, err := ch.send(ctx, nil, subject, m, reply, data)
	return MessageID(m.nonce), err
}

// send seals plaintext into m (kind, nonce or ids, re already set) under
// the current epoch, signs it and publishes it on subject. The wire bytes
// are built in buf, returned for reuse.
func (ch *Channel) send(ctx context.Context, buf []byte, subject string, m *channelMsg, reply string, plaintext []byte) ([]byte, error) {
	st, err := ch.current(ctx)
	if err != nil {
		return buf, err
	}
	aead, err := ch.key(ctx, st.epoch)
	if err != nil {
		return buf, err
	}
	m.room, m.epoch, m.sender, m.ts = ch.room, st.epoch, ch.c.id.Endpoint, time.Now().UnixMilli()
	wire, err := sealChannel(buf, m, aead, ch.c.signer.Sign, reply, plaintext)
	if err != nil {
		return buf, err
	}
	return wire, ch.c.nc.PublishMsg(&nats.Msg{Subject: subject, Reply: reply, Data: wire})
}

// open checks a received message or frame, cheapest first and everything
// an outsider can send before anything that costs a request or a cache
// entry: format, room and kind, time, sender's membership and signature,
// epoch, decryption, and only then the replay window. seen is the
// receiving subscription's replay window: every subscription receives
// each message once, so each keeps its own. It returns the messages in
// frame order (one for a message), all or none.
func (ch *Channel) open(ctx context.Context, seen *replayWindow, raw *nats.Msg, kind byte, re []byte) ([]*Message, error) {
	m, err := parseChannel(raw.Data)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	if err := m.placed(ch.room, kind, re, raw.Reply, now, ch.window); err != nil {
		return nil, err
	}
	if err := ch.checkSender(ctx, m, raw.Reply); err != nil {
		return nil, err
	}
	aead, err := ch.key(ctx, m.epoch)
	if err != nil {
		return nil, err
	}
	// The received bytes are this subscription's own (nats.go copies
	// each delivery); only WithRefusals shows them to anyone afterwards.
	datas, err := openChannel(m, aead, ch.onRefused == nil)
	if err != nil {
		return nil, err
	}
	ids := m.messageIDs()
	if err := seen.claim(ids, m.ts, now); err != nil {
		return nil, err
	}
	msgs := make([]Message, len(ids)) // one allocation for a frame
	out := make([]*Message, len(ids))
	for i, id := range ids {
		msgs[i] = Message{Room: m.room, Epoch: m.epoch, Sender: m.sender, ID: id,
			Time: time.UnixMilli(m.ts), Data: datas[i], reply: raw.Reply, ch: ch}
		out[i] = &msgs[i]
	}
	return out, nil
}

// checkSender checks that m's sender is a member at m's epoch (by the
// service-signed member list) and signed m. An unknown sender makes the
// list be read again at most every channelMinRefresh; a newer epoch does
// so at once, but only for a member's valid signature, so outsiders cannot
// drive refreshes at will.
func (ch *Channel) checkSender(ctx context.Context, m *channelMsg, reply string) error {
	st, err := ch.current(ctx)
	if err != nil {
		return err
	}
	mem, ok := st.members[m.sender]
	if !ok && time.Since(st.read) >= channelMinRefresh {
		if st, err = ch.refresh(ctx, st.read); err != nil {
			return err
		}
		mem, ok = st.members[m.sender]
	}
	if !ok {
		return fmt.Errorf("%w: %s", ErrChannelNotMember, m.sender)
	}
	if err := verifyChannel(m, mem.key, reply); err != nil {
		return err
	}
	if m.epoch > st.epoch {
		if st, err = ch.refresh(ctx, st.read); err != nil {
			return err
		}
		if again, ok := st.members[m.sender]; ok && !again.key.Equal(mem.key) {
			return ErrChannelSignature // re-registered with another key since
		}
	}
	_, err = st.admit(m)
	return err
}

// admit applies the membership rule: m's sender is a member, m's epoch is
// not beyond the room's, and the sender was a member at it (Since ≤ epoch;
// a member's list entry means continuous membership since then).
func (st *channelState) admit(m *channelMsg) (channelMember, error) {
	mem, ok := st.members[m.sender]
	switch {
	case !ok:
		return mem, fmt.Errorf("%w: %s", ErrChannelNotMember, m.sender)
	case m.epoch > st.epoch:
		return mem, fmt.Errorf("%w: %d (room is at %d)", ErrChannelUnknown, m.epoch, st.epoch)
	case m.epoch < mem.since:
		return mem, fmt.Errorf("%w: %s joined at epoch %d, message is of epoch %d", ErrChannelEpoch, m.sender, mem.since, m.epoch)
	}
	return mem, nil
}

// current returns the channel's state, read again first if it is older
// than refreshAfter.
func (ch *Channel) current(ctx context.Context) (*channelState, error) {
	st := ch.state.Load()
	if time.Since(st.read) < ch.refreshAfter {
		return st, nil
	}
	return ch.refresh(ctx, st.read)
}

// refresh reads the room and, if it changed since, its member list, then
// makes sure the current epoch's key is at hand. seen is the read time of
// the state the caller found wanting: if another caller has refreshed since,
// its result is used instead of asking again.
func (ch *Channel) refresh(ctx context.Context, seen time.Time) (*channelState, error) {
	ch.refreshMu.Lock()
	defer ch.refreshMu.Unlock()
	old := ch.state.Load()
	if old != nil && old.read.After(seen) && !seen.IsZero() {
		return old, nil
	}
	read := time.Now()
	r, err := ch.c.Room(ctx, ch.room)
	if err != nil {
		return nil, err
	}
	st := &channelState{epoch: r.Epoch, updated: r.Updated, read: read}
	if old != nil && old.epoch == r.Epoch && old.updated == r.Updated {
		st.members = old.members
	} else if st.members, err = ch.readMembers(ctx); err != nil {
		return nil, err
	}
	if _, err := ch.key(ctx, r.Epoch); err != nil {
		return nil, err
	}
	ch.state.Store(st)
	return st, nil
}

func (ch *Channel) readMembers(ctx context.Context) (map[string]channelMember, error) {
	all, err := ch.c.AllMembers(ctx, ch.room)
	if err != nil {
		return nil, err
	}
	out := make(map[string]channelMember, len(all))
	for _, m := range all {
		raw, err := nkeys.Decode(nkeys.PrefixByteUser, []byte(m.SignKey))
		if err != nil || len(raw) != ed25519.PublicKeySize {
			continue // not a user key: it can sign nothing here
		}
		out[m.Endpoint] = channelMember{key: ed25519.PublicKey(raw), since: m.Since}
	}
	return out, nil
}

// key returns the AEAD of epoch, fetching and opening this member's own
// sealed key once.
func (ch *Channel) key(ctx context.Context, epoch uint64) (cipher.AEAD, error) {
	if k, ok := ch.keys.Load(epoch); ok {
		e := k.(*epochKey)
		return e.aead, e.err
	}
	roomKey, _, err := ch.c.Key(ctx, ch.room, epoch)
	e := &epochKey{}
	switch {
	case errors.Is(err, api.ErrForbidden) || errors.Is(err, api.ErrNotFound):
		e.err = fmt.Errorf("%w: %d: %v", ErrChannelUnknown, epoch, err)
		if errors.Is(err, api.ErrNotFound) {
			return nil, e.err // the epoch may exist later: not kept
		}
	case err != nil:
		return nil, err
	default:
		if e.aead, err = channelAEAD(roomKey); err != nil {
			return nil, err
		}
	}
	ch.keys.Store(epoch, e)
	return e.aead, e.err
}

// placed checks that m belongs where it was received (room, kind, the
// request it answers; a frame never with a reply subject) and that its
// time is within window of now.
func (m *channelMsg) placed(room string, kind byte, re []byte, reply string, now time.Time, window time.Duration) error {
	if m.room != room || m.kind != kind || string(m.re) != string(re) || m.ids != nil && reply != "" {
		return ErrChannelMisplaced
	}
	if d := now.Sub(time.UnixMilli(m.ts)); d > window || d < -window {
		return fmt.Errorf("%w: %s off", ErrChannelStale, d.Round(time.Millisecond))
	}
	return nil
}

func (ch *Channel) refuse(raw *nats.Msg, err error) {
	ch.refused.Add(1)
	if ch.onRefused != nil {
		ch.onRefused(raw, err)
	}
}
