package client

import (
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/unibus/membership/api"
)

// The channel message format (docs/protocol.md §19). A message is one NATS
// payload, every integer big-endian:
//
//	version    1   ChannelVersion
//	kind       1   0 message (publish or request), 1 reply
//	room_len   1   1..64, then room id
//	epoch      8   the epoch whose key sealed it, ≥ 1
//	sender_len 1   1..64, then the sender's endpoint id
//	ts         8   Unix milliseconds at the sender
//	nonce      24  XChaCha20-Poly1305 nonce, random; also the message id
//	re         24  only in a reply: the request's message id
//	ct_len     4   then ct: AEAD ciphertext and 16-byte tag
//	sig        64  Ed25519 over channelCanonical
//
// Everything before ct_len is the header; it is the AEAD's associated data
// and is signed, so no field can be changed without both failing.
//
// A frame (ChannelFrameVersion, channel_frame.go) carries several messages
// under one signature: the same layout with count and ids in place of
// nonce and re.
const (
	ChannelVersion      = 1
	ChannelFrameVersion = 2

	// ChannelSignLabel and ChannelKeyLabel separate this use of the
	// signing key and of the room key from every other one.
	ChannelSignLabel = "unibus-channel-message-v1"
	// ChannelFrameSignLabel separates a frame's signatures from a
	// message's.
	ChannelFrameSignLabel = "unibus-channel-frame-v2"
	ChannelKeyLabel       = "unibus-channel-key-v1"

	channelKindMessage = 0
	channelKindReply   = 1

	channelNonceSize = chacha20poly1305.NonceSizeX // 24
	channelTagSize   = chacha20poly1305.Overhead   // 16
	channelSigSize   = ed25519.SignatureSize       // 64
)

// Refusals of a channel message, for errors.Is. The text of each is safe to
// log: it names no key material.
var (
	ErrChannelMalformed = errors.New("channel: malformed message")
	ErrChannelMisplaced = errors.New("channel: message for another room, or a reply where none was asked for")
	ErrChannelStale     = errors.New("channel: message time outside the replay window")
	ErrChannelNotMember = errors.New("channel: sender is not a member of the room")
	ErrChannelEpoch     = errors.New("channel: sender was not a member at the message's epoch")
	ErrChannelSignature = errors.New("channel: bad sender signature")
	ErrChannelUnknown   = errors.New("channel: unknown epoch")
	ErrChannelOpen      = errors.New("channel: ciphertext does not open under the epoch key")
	ErrChannelReplay    = errors.New("channel: message id seen before")
	ErrChannelClosed    = errors.New("channel: closed for publishing")
	ErrChannelUnpinned  = errors.New("channel: the client must verify replies (not WithUnverifiedReplies): sender membership is checked against replies the service signed")
)

// channelMsg is one decoded message. header aliases the wire bytes it was
// parsed from.
type channelMsg struct {
	version byte // ChannelVersion or ChannelFrameVersion
	kind    byte
	room    string
	epoch   uint64
	sender  string
	ts      int64
	nonce   [channelNonceSize]byte // the AEAD nonce: the (first) message id
	ids     []byte                 // a frame's ids, count×24, nonce first; nil in a message
	re      []byte                 // 24 bytes in a reply, else nil
	header  []byte
	ct      []byte
	sig     []byte
}

// appendHeader writes the header fields of m.
func (m *channelMsg) appendHeader(b []byte) []byte {
	b = append(b, m.versionByte(), m.kind, byte(len(m.room)))
	b = append(b, m.room...)
	b = binary.BigEndian.AppendUint64(b, m.epoch)
	b = append(b, byte(len(m.sender)))
	b = append(b, m.sender...)
	b = binary.BigEndian.AppendUint64(b, uint64(m.ts))
	if m.ids != nil {
		b = binary.BigEndian.AppendUint16(b, uint16(len(m.ids)/channelNonceSize))
		return append(b, m.ids...)
	}
	b = append(b, m.nonce[:]...)
	return append(b, m.re...)
}

// versionByte is ChannelFrameVersion for a frame, else ChannelVersion.
func (m *channelMsg) versionByte() byte {
	if m.ids != nil {
		return ChannelFrameVersion
	}
	return ChannelVersion
}

// channelCanonical is what the sender signs: the label, the header, the
// NATS reply subject the message was published with (empty if none: a
// request's replies cannot be redirected) and the ciphertext, each with its
// length as a u32. A frame (header version ChannelFrameVersion) signs
// under ChannelFrameSignLabel with SHA-256(ciphertext) in place of the
// ciphertext: Ed25519 hashes what it signs with SHA-512 twice to sign and
// once to verify, which for a frame of many messages cost more than the
// curve arithmetic; one SHA-256 pass on each side (SHA-NI where present)
// binds the ciphertext as firmly, by SHA-256's collision resistance
// (128 bits, Ed25519's own level).
func channelCanonical(header []byte, reply string, ct []byte) []byte {
	label := ChannelSignLabel
	if len(header) > 0 && header[0] == ChannelFrameVersion {
		label = ChannelFrameSignLabel
		sum := sha256.Sum256(ct)
		ct = sum[:]
	}
	b := make([]byte, 0, 16+len(label)+len(header)+len(reply)+len(ct))
	b = appendField(b, []byte(label))
	b = appendField(b, header)
	b = appendField(b, []byte(reply))
	return appendField(b, ct)
}

func appendField(b, f []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
	return append(b, f...)
}

// channelAEAD derives an epoch's message key from its room key with
// HKDF-SHA256 (no salt, info ChannelKeyLabel), so the room key itself is
// never used directly as a cipher key and can serve other purposes later.
func channelAEAD(roomKey []byte) (cipher.AEAD, error) {
	k, err := channelKey(roomKey)
	if err != nil {
		return nil, err
	}
	return chacha20poly1305.NewX(k)
}

func channelKey(roomKey []byte) ([]byte, error) {
	return hkdf.Key(sha256.New, roomKey, nil, ChannelKeyLabel, chacha20poly1305.KeySize)
}

// sealChannel encrypts plaintext into m, signs it for reply and returns the
// wire bytes, appended to dst[:0] (a buffer the caller may reuse once the
// bytes are published: nats.go copies them).
func sealChannel(dst []byte, m *channelMsg, aead cipher.AEAD, sign func([]byte) ([]byte, error), reply string, plaintext []byte) ([]byte, error) {
	header := m.appendHeader(make([]byte, 0, 64+len(m.room)+len(m.sender)+len(m.ids)))
	out := slices.Grow(dst[:0], len(header)+4+len(plaintext)+channelTagSize+channelSigSize)
	out = append(out, header...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(plaintext)+channelTagSize))
	ctStart := len(out)
	out = aead.Seal(out, m.nonce[:], plaintext, header)
	sig, err := sign(channelCanonical(header, reply, out[ctStart:]))
	if err != nil {
		return nil, err
	}
	if len(sig) != channelSigSize {
		return nil, fmt.Errorf("channel: signature is %d bytes", len(sig))
	}
	return append(out, sig...), nil
}

// parseChannel decodes wire bytes strictly: every length within bounds, ids
// valid, nothing missing and nothing trailing.
func parseChannel(data []byte) (*channelMsg, error) {
	r := reader{b: data}
	m := &channelMsg{}
	if m.version = r.byte(); m.version != ChannelVersion && m.version != ChannelFrameVersion {
		return nil, fmt.Errorf("%w: version %d", ErrChannelMalformed, m.version)
	}
	m.kind = r.byte()
	if m.kind != channelKindMessage && (m.kind != channelKindReply || m.version == ChannelFrameVersion) {
		return nil, fmt.Errorf("%w: kind %d", ErrChannelMalformed, m.kind)
	}
	m.room = string(r.next(int(r.byte())))
	m.epoch = r.u64()
	m.sender = string(r.next(int(r.byte())))
	m.ts = int64(r.u64())
	if m.version == ChannelFrameVersion {
		if err := m.parseIDs(&r); err != nil {
			return nil, err
		}
	} else {
		copy(m.nonce[:], r.next(channelNonceSize))
	}
	if m.kind == channelKindReply {
		m.re = r.next(channelNonceSize)
	}
	m.header = data[:r.off]
	ctLen := r.u32()
	if r.bad || ctLen < channelTagSize || uint64(ctLen)+channelSigSize != uint64(len(data)-r.off) {
		return nil, fmt.Errorf("%w: lengths do not add up", ErrChannelMalformed)
	}
	m.ct = r.next(int(ctLen))
	m.sig = r.next(channelSigSize)
	if api.ValidateID("room", m.room) != nil || api.ValidateID("sender", m.sender) != nil ||
		m.epoch == 0 || m.ts < 0 {
		return nil, fmt.Errorf("%w: room, sender, epoch or ts out of range", ErrChannelMalformed)
	}
	return m, nil
}

// reader takes fields off a byte slice; running past the end sets bad and
// yields zeros, checked once at the end.
type reader struct {
	b   []byte
	off int
	bad bool
}

func (r *reader) next(n int) []byte {
	if r.bad || n > len(r.b)-r.off {
		r.bad = true
		return nil
	}
	r.off += n
	return r.b[r.off-n : r.off]
}

func (r *reader) byte() byte {
	if b := r.next(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) u64() uint64 {
	if b := r.next(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func (r *reader) u16() uint16 {
	if b := r.next(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if b := r.next(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

// verifyChannel checks m's signature by signKey (raw Ed25519) for reply.
func verifyChannel(m *channelMsg, signKey ed25519.PublicKey, reply string) error {
	if !ed25519.Verify(signKey, channelCanonical(m.header, reply, m.ct), m.sig) {
		return ErrChannelSignature
	}
	return nil
}

// openChannel decrypts m's ciphertext with its epoch's AEAD and returns
// the messages it carries (one, or a frame's).
func openChannel(m *channelMsg, aead cipher.AEAD) ([][]byte, error) {
	pt, err := aead.Open(nil, m.nonce[:], m.ct, m.header)
	if err != nil {
		return nil, ErrChannelOpen
	}
	return m.splitPlaintext(pt)
}
