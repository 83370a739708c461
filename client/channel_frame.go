package client

import (
	"encoding/binary"
	"fmt"
)

// The channel frame (docs/protocol.md §19.6): several messages of one
// sender under one signature, so that the Ed25519 signature — by far the
// largest cost of a message — is paid once per frame. Its header is a
// message header with version ChannelFrameVersion and, in place of nonce,
//
//	count 2   number of messages, 2..65535
//	ids   24×count  their message ids, distinct; the first is the AEAD nonce
//
// and its plaintext is, for each message in order, u32 length then data.
// A frame carries messages only (kind 0, no reply subject): requests and
// replies stay single. One message travels as a version-1 message, so each
// set of messages has one encoding.
const (
	channelFrameMin   = 2
	channelFrameMax   = 1<<16 - 1
	channelEntryLen   = 4 // the u32 length before each message in a frame
	channelFrameExtra = 2 // count
)

// parseIDs reads a frame's count and ids; the first id is the nonce.
func (m *channelMsg) parseIDs(r *reader) error {
	n := int(r.u16())
	if n < channelFrameMin {
		return fmt.Errorf("%w: frame of %d messages", ErrChannelMalformed, n)
	}
	m.ids = r.next(n * channelNonceSize)
	copy(m.nonce[:], m.ids)
	return nil
}

// messageIDs are the ids m carries, in order.
func (m *channelMsg) messageIDs() []MessageID {
	if m.ids == nil {
		return []MessageID{m.nonce}
	}
	out := make([]MessageID, len(m.ids)/channelNonceSize)
	for i := range out {
		copy(out[i][:], m.ids[i*channelNonceSize:])
	}
	return out
}

// splitPlaintext returns the messages of m's opened plaintext: the whole
// of it for a message, a frame's entries (exactly count of them, nothing
// left over) for a frame. The entries alias pt.
func (m *channelMsg) splitPlaintext(pt []byte) ([][]byte, error) {
	if m.ids == nil {
		return [][]byte{pt}, nil
	}
	out := make([][]byte, 0, len(m.ids)/channelNonceSize)
	r := reader{b: pt}
	for range cap(out) {
		out = append(out, r.next(int(r.u32())))
	}
	if r.bad || r.off != len(pt) {
		return nil, fmt.Errorf("%w: frame entries do not add up", ErrChannelMalformed)
	}
	return out, nil
}

// appendEntry appends one message's frame entry to a frame's plaintext.
func appendEntry(b, data []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// frameSize is the wire size of a frame of n messages whose entries total
// entries bytes, sent by sender in room: what the batcher keeps under the
// server's max_payload.
func frameSize(room, sender string, n, entries int) int {
	return 1 + 1 + 1 + len(room) + 8 + 1 + len(sender) + 8 + channelFrameExtra +
		n*channelNonceSize + 4 + entries + channelTagSize + channelSigSize
}
