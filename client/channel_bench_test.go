package client

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// The channel's per-message costs without a server (docs/performance.md,
// "Encrypted room channels"): a frame of benchFrameN messages of 1 KiB,
// as memberbench's channel row batches them, sealed by the publisher's
// path and checked and opened by the subscriber's. Run with -benchmem:
// allocs/op is per frame.
const (
	benchFrameN   = 256
	benchPayload  = 1024
	benchRoom     = "benchroom"
	benchSender   = "benchsender"
	benchFrameSet = 32 // frames sealed ahead for the open benchmark, distinct ids
)

func benchKeys(b *testing.B) (nkeys.KeyPair, ed25519.PublicKey, *epochKey) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		b.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	raw, _ := nkeys.Decode(nkeys.PrefixByteUser, []byte(pub))
	roomKey := make([]byte, 32)
	_, _ = rand.Read(roomKey)
	aead, err := channelAEAD(roomKey)
	if err != nil {
		b.Fatal(err)
	}
	return kp, ed25519.PublicKey(raw), &epochKey{aead: aead}
}

// benchFrame seals one frame as the batcher does, appending into buf.
func benchFrame(b *testing.B, bt *batcher, kp nkeys.KeyPair, ek *epochKey, payload, buf []byte) []byte {
	for range benchFrameN {
		id, err := bt.newID()
		if err != nil {
			b.Fatal(err)
		}
		bt.ids = append(bt.ids, id[:]...)
		bt.plain = appendEntry(bt.plain, payload)
	}
	m := &channelMsg{kind: channelKindMessage, ids: bt.ids, room: benchRoom, epoch: 1, sender: benchSender, ts: time.Now().UnixMilli()}
	copy(m.nonce[:], bt.ids)
	wire, err := sealChannel(buf, m, ek.aead, kp.Sign, "", bt.plain)
	if err != nil {
		b.Fatal(err)
	}
	bt.ids, bt.plain = bt.ids[:0], bt.plain[:0]
	return wire
}

// BenchmarkChannelFrameSeal: queue benchFrameN messages and seal the frame
// (the batcher's work between Publish and nats.go's copy).
func BenchmarkChannelFrameSeal(b *testing.B) {
	kp, _, ek := benchKeys(b)
	payload := make([]byte, benchPayload)
	bt := &batcher{max: benchFrameN}
	var buf []byte
	b.SetBytes(benchFrameN * benchPayload)
	b.ReportAllocs()
	for b.Loop() {
		buf = benchFrame(b, bt, kp, ek, payload, buf)
	}
}

// BenchmarkChannelFrameOpen: check and open a frame as a subscription
// does (Channel.open: parse, place, member and signature, key, AEAD,
// replay window, the delivered Messages). Each iteration copies the frame
// into the delivery's buffer first, as nats.go does (a 256 KiB memmove).
func BenchmarkChannelFrameOpen(b *testing.B) {
	kp, pub, ek := benchKeys(b)
	payload := make([]byte, benchPayload)
	bt := &batcher{max: benchFrameN}
	frames := make([]*nats.Msg, benchFrameSet)
	for i := range frames {
		frames[i] = &nats.Msg{Data: benchFrame(b, bt, kp, ek, payload, nil)}
	}
	ch := &Channel{room: benchRoom, window: DefaultReplayWindow, replayMemory: DefaultReplayMemory, refreshAfter: time.Hour}
	ch.state.Store(&channelState{epoch: 1, read: time.Now(), members: map[string]channelMember{benchSender: {key: pub, since: 1}}})
	ch.keys.Store(uint64(1), ek)
	ctx := context.Background()
	var seen *replayWindow
	raw := &nats.Msg{} // a delivery's own bytes, as nats.go hands them over
	b.SetBytes(benchFrameN * benchPayload)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i%len(frames) == 0 {
			seen = ch.newReplayWindow() // the same ids may come again
		}
		raw.Data = append(raw.Data[:0], frames[i%len(frames)].Data...)
		ms, err := ch.open(ctx, seen, raw, channelKindMessage, nil)
		if err != nil || len(ms) != benchFrameN {
			b.Fatalf("open: %d messages, %v", len(ms), err)
		}
		i++
	}
}

// BenchmarkChannelFrameCrypto: the cryptography a frame cannot do without
// under its wire format, alone: XChaCha20-Poly1305 over the entries and
// SHA-256 of the ciphertext (what the frame signature covers, §19.6), each
// paid once by the publisher and once by every subscriber. The frame
// benchmarks above, minus these, are the channel's own costs.
func BenchmarkChannelFrameCrypto(b *testing.B) {
	_, _, ek := benchKeys(b)
	pt := make([]byte, benchFrameN*(channelEntryLen+benchPayload))
	nonce := make([]byte, channelNonceSize)
	ct := ek.aead.Seal(nil, nonce, pt, nil)
	b.Run("seal", func(b *testing.B) {
		b.SetBytes(int64(len(pt)))
		out := make([]byte, 0, len(ct))
		for b.Loop() {
			out = ek.aead.Seal(out[:0], nonce, pt, nil)
		}
	})
	b.Run("open", func(b *testing.B) {
		b.SetBytes(int64(len(pt)))
		out := make([]byte, 0, len(pt))
		for b.Loop() {
			if _, err := ek.aead.Open(out[:0], nonce, ct, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sha256", func(b *testing.B) {
		b.SetBytes(int64(len(ct)))
		for b.Loop() {
			_ = sha256.Sum256(ct)
		}
	})
}

// BenchmarkChannelReplayClaim: one subscription's replay window from
// empty to 200 frames of benchFrameN ids, as a row's batched run fills it
// (50,000 messages). One op is the whole fill.
func BenchmarkChannelReplayClaim(b *testing.B) {
	const frames = 200
	ids := make([][]MessageID, frames)
	for f := range ids {
		ids[f] = make([]MessageID, benchFrameN)
		for i := range ids[f] {
			_, _ = rand.Read(ids[f][i][:])
		}
	}
	ch := &Channel{window: DefaultReplayWindow, replayMemory: DefaultReplayMemory}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		w := ch.newReplayWindow()
		for _, f := range ids {
			if err := w.claim(f, now.UnixMilli(), now); err != nil {
				b.Fatal(err)
			}
		}
	}
}
