package client

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"testing"

	"github.com/nats-io/nkeys"
)

// addFrameVectors adds the frame vectors (docs/protocol.md §19.6) to the
// file: a good frame and its tampered, reordered, replaying, truncated and
// otherwise broken forms.
func addFrameVectors(t *testing.T, keys map[uint64][]byte, signers map[string]nkeys.KeyPair,
	add func(base channelVector, name, desc string, change func(v *channelVector)),
	alter func(v *channelVector, f func(b []byte) []byte)) {
	msgs := [][]byte{[]byte("one"), []byte("two"), []byte("three")}
	entries := func(msgs [][]byte) []byte {
		var b []byte
		for _, m := range msgs {
			b = appendEntry(b, m)
		}
		return b
	}
	frame := func(sender string, starts []byte, plaintext []byte) channelVector {
		t.Helper()
		return sealFrameVector(t, keys[2], signers[sender], sender, starts, plaintext, msgs)
	}
	ok := frame("alice", []byte{0xd0, 0xe0, 0xf0}, entries(msgs))
	idsLen := len(ok.IDsHex) * channelNonceSize
	idsAt := len(ok.HeaderHex)/2 - idsLen // offset of the first id
	headerLen := len(ok.HeaderHex) / 2

	add(ok, "frame_ok", "alice's frame of three messages at epoch 2, delivered in order.", func(v *channelVector) {})
	add(ok, "frame_misplaced_reply_subject", "frame_ok received with a NATS reply subject: a frame carries messages only.", func(v *channelVector) {
		v.CheckReply, v.Expect = "_INBOX.x", "misplaced"
	})
	add(ok, "frame_bad_signature_tampered", "A ciphertext byte of frame_ok flipped after signing.", func(v *channelVector) {
		alter(v, func(b []byte) []byte { b[headerLen+4] ^= 1; return b })
		v.Expect = "bad_signature"
	})
	add(ok, "frame_bad_signature_reordered", "The second and third ids of frame_ok swapped after signing.", func(v *channelVector) {
		alter(v, func(b []byte) []byte { swapIDs(b[idsAt:], 1, 2); return b })
		v.Expect = "bad_signature"
	})
	add(ok, "frame_bad_ciphertext_reordered_resigned", "alice swaps the first two ids of frame_ok and signs again: the nonce and associated data changed, so it no longer opens.", func(v *channelVector) {
		alter(v, func(b []byte) []byte {
			swapIDs(b[idsAt:], 0, 1)
			sig, _ := signers["alice"].Sign(channelCanonical(b[:headerLen], "", b[headerLen+4:len(b)-channelSigSize]))
			return append(b[:len(b)-channelSigSize], sig...)
		})
		v.Expect = "bad_ciphertext"
	})
	add(frame("alice", []byte{0xd0, 0xe0, 0xd0}, entries(msgs)), "frame_replay_id_within", "alice's frame naming the same id first and third, sealed and signed: refused whole as a replay.", func(v *channelVector) {
		v.Expect = "replay"
	})
	add(frame("dave", []byte{0x10, 0x20, 0x30}, entries(msgs)), "frame_not_member", "dave, no member, sends a frame.", func(v *channelVector) { v.Expect = "not_member" })
	add(ok, "frame_malformed_truncated", "frame_ok without the last byte of its signature.", func(v *channelVector) {
		alter(v, func(b []byte) []byte { return b[:len(b)-1] })
		v.Expect = "malformed"
	})
	add(ok, "frame_malformed_count_too_big", "frame_ok's count raised to 4: the ids and lengths no longer add up.", func(v *channelVector) {
		alter(v, func(b []byte) []byte { binary.BigEndian.PutUint16(b[idsAt-2:], 4); return b })
		v.Expect = "malformed"
	})
	add(sealFrameVector(t, keys[2], signers["alice"], "alice", []byte{0x50}, entries(msgs[:1]), msgs[:1]), "frame_malformed_one", "A frame of one message, sealed and signed: one message travels as version 1.", func(v *channelVector) {
		v.Expect = "malformed"
	})
	add(frame("alice", []byte{0x60, 0x70, 0x80}, entries(msgs[:2])), "frame_malformed_entries", "Sealed and signed with three ids but two entries: malformed once opened.", func(v *channelVector) {
		v.Expect = "malformed"
	})
}

// sealFrameVector seals plaintext as a frame of epoch 2 with ids seq(s, 24)
// for each s in starts, signed by kp for sender; msgs are what it carries.
func sealFrameVector(t *testing.T, roomKey []byte, kp nkeys.KeyPair, sender string, starts, plaintext []byte, msgs [][]byte) channelVector {
	t.Helper()
	m := &channelMsg{kind: channelKindMessage, room: vectorRoom, epoch: 2, sender: sender, ts: vectorTS, ids: []byte{}}
	v := channelVector{Sender: sender, Epoch: 2, TS: vectorTS, PlainHex: hex.EncodeToString(plaintext),
		CheckRoom: vectorRoom, CheckNowMS: vectorTS, Expect: "ok"}
	for _, s := range starts {
		m.ids = append(m.ids, seq(s, channelNonceSize)...)
		v.IDsHex = append(v.IDsHex, hex.EncodeToString(seq(s, channelNonceSize)))
	}
	for _, d := range msgs {
		v.MessagesHex = append(v.MessagesHex, hex.EncodeToString(d))
	}
	copy(m.nonce[:], m.ids)
	aead, err := channelAEAD(roomKey)
	if err != nil {
		t.Fatal(err)
	}
	wire, err := sealChannel(nil, m, aead, kp.Sign, "", plaintext)
	if err != nil {
		t.Fatal(err)
	}
	header := wire[:len(m.appendHeader(nil))]
	ct := wire[len(header)+4 : len(wire)-channelSigSize]
	v.NonceHex = hex.EncodeToString(m.nonce[:])
	v.HeaderHex, v.CanonicalHex = hex.EncodeToString(header), hex.EncodeToString(channelCanonical(header, "", ct))
	v.SigHex, v.MessageHex = hex.EncodeToString(wire[len(wire)-channelSigSize:]), hex.EncodeToString(wire)
	return v
}

// swapIDs swaps ids i and j of the ids starting at b.
func swapIDs(b []byte, i, j int) {
	a := bytes.Clone(b[i*channelNonceSize : (i+1)*channelNonceSize])
	copy(b[i*channelNonceSize:], b[j*channelNonceSize:(j+1)*channelNonceSize])
	copy(b[j*channelNonceSize:], a)
}
