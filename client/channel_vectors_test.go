package client

import (
	"bytes"
	"crypto/cipher"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nkeys"
)

var updateChannel = flag.Bool("update-channel", false, "rewrite testdata/channel_vectors.json from the generator")

const (
	channelVectorsFile = "testdata/channel_vectors.json"
	vectorRoom         = "ops"
	vectorTS           = int64(1764000000000)
)

// channelVectorFile is the layout of testdata/channel_vectors.json.
type channelVectorFile struct {
	Comment    []string              `json:"comment"`
	SignLabel  string                `json:"sign_label"`
	FrameLabel string                `json:"frame_sign_label"`
	KeyLabel   string                `json:"key_label"`
	Room       string                `json:"room"`
	Epoch      uint64                `json:"current_epoch"`
	RoomKeys   map[string]string     `json:"room_keys_hex"`    // epoch → room key
	MsgKeys    map[string]string     `json:"message_keys_hex"` // epoch → HKDF output
	Members    []channelVectorMember `json:"members"`
	WindowMS   int64                 `json:"window_ms"`
	Vectors    []channelVector       `json:"vectors"`
}

type channelVectorMember struct {
	Endpoint string `json:"endpoint"`
	Seed     string `json:"seed"`
	SignKey  string `json:"sign_key"`
	Since    uint64 `json:"since"`
}

// channelVector: sender … sig_hex describe what was sealed and signed (a
// frame's ids_hex are its message ids, plaintext_hex its entries and
// messages_hex the messages they carry);
// message_hex is what is received (a vector may alter it afterwards). A
// receiver checks it as check_kind on check_room with NATS reply subject
// check_reply (and, for a reply, for the request id check_re_hex) at
// check_now_ms.
type channelVector struct {
	Name         string   `json:"name"`
	Description  string   `json:"description"`
	Sender       string   `json:"sender"`
	Kind         byte     `json:"kind"`
	Epoch        uint64   `json:"epoch"`
	TS           int64    `json:"ts"`
	NonceHex     string   `json:"nonce_hex"`
	ReHex        string   `json:"re_hex"`
	Reply        string   `json:"reply"`
	IDsHex       []string `json:"ids_hex,omitempty"`
	PlainHex     string   `json:"plaintext_hex"`
	MessagesHex  []string `json:"messages_hex,omitempty"`
	HeaderHex    string   `json:"header_hex"`
	CanonicalHex string   `json:"canonical_hex"`
	SigHex       string   `json:"sig_hex"`
	MessageHex   string   `json:"message_hex"`
	CheckRoom    string   `json:"check_room"`
	CheckKind    byte     `json:"check_kind"`
	CheckReHex   string   `json:"check_re_hex"`
	CheckReply   string   `json:"check_reply"`
	CheckNowMS   int64    `json:"check_now_ms"`
	Expect       string   `json:"expect"`
}

// Outcomes, in the order a receiver checks.
var channelExpect = map[string]error{
	"ok":             nil,
	"malformed":      ErrChannelMalformed,
	"misplaced":      ErrChannelMisplaced,
	"stale":          ErrChannelStale,
	"not_member":     ErrChannelNotMember,
	"unknown_epoch":  ErrChannelUnknown,
	"other_epoch":    ErrChannelEpoch,
	"bad_signature":  ErrChannelSignature,
	"bad_ciphertext": ErrChannelOpen,
	"replay":         ErrChannelReplay,
}

// checkVector runs a receiver's checks on one vector with the file's
// member list and keys, in the order Channel.open runs them.
func checkVector(f *channelVectorFile, v *channelVector) error {
	wire, _ := hex.DecodeString(v.MessageHex)
	m, err := parseChannel(wire)
	if err != nil {
		return err
	}
	re, _ := hex.DecodeString(v.CheckReHex)
	if len(re) == 0 {
		re = nil
	}
	now := time.UnixMilli(v.CheckNowMS)
	if err := m.placed(v.CheckRoom, v.CheckKind, re, v.CheckReply, now, time.Duration(f.WindowMS)*time.Millisecond); err != nil {
		return err
	}
	st := &channelState{epoch: f.Epoch, members: map[string]channelMember{}}
	for _, mem := range f.Members {
		raw, err := nkeys.Decode(nkeys.PrefixByteUser, []byte(mem.SignKey))
		if err != nil {
			return err
		}
		st.members[mem.Endpoint] = channelMember{key: ed25519.PublicKey(raw), since: mem.Since}
	}
	mem, err := st.admit(m)
	if err != nil {
		return err
	}
	if err := verifyChannel(m, mem.key, v.CheckReply); err != nil {
		return err
	}
	key, _ := hex.DecodeString(f.RoomKeys[epochName(m.epoch)])
	aead, err := channelAEAD(key)
	if err != nil {
		return err
	}
	want := v.MessagesHex
	if m.ids == nil {
		want = []string{v.PlainHex}
	}
	for _, inPlace := range []bool{false, true} { // into a new buffer, then over wire
		if err := checkOpened(m, aead, inPlace, want); err != nil {
			return err
		}
	}
	w := &replayWindow{keep: time.Minute, max: DefaultReplayMemory, seen: map[MessageID]struct{}{}}
	return w.claim(m.messageIDs(), m.ts, now)
}

// checkOpened opens m and compares its messages with want (hex).
func checkOpened(m *channelMsg, aead cipher.AEAD, inPlace bool, want []string) error {
	datas, err := openChannel(m, aead, inPlace)
	if err != nil {
		return err
	}
	if len(datas) != len(want) {
		return errors.New("message count differs")
	}
	for i, d := range datas {
		if hex.EncodeToString(d) != want[i] {
			return errors.New("plaintext differs from plaintext_hex or messages_hex")
		}
	}
	return nil
}

func epochName(e uint64) string { return string(rune('0' + e)) }

// TestChannelVectors checks every vector in testdata/channel_vectors.json
// against its expected outcome, and that the file is what the generator
// makes (so the document, the file and the code agree).
func TestChannelVectors(t *testing.T) {
	want := generateChannelVectors(t)
	if *updateChannel {
		if err := os.WriteFile(channelVectorsFile, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(channelVectorsFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, want) {
		t.Fatalf("%s differs from the generator; run go test ./client -run TestChannelVectors -update-channel and review the diff", channelVectorsFile)
	}
	var f channelVectorFile
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Vectors) < 15 {
		t.Fatalf("only %d vectors", len(f.Vectors))
	}
	for _, v := range f.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			target, ok := channelExpect[v.Expect]
			if !ok {
				t.Fatalf("unknown expect %q", v.Expect)
			}
			err := checkVector(&f, &v)
			if target == nil && err != nil || target != nil && !errors.Is(err, target) {
				t.Fatalf("got %v, want %s", err, v.Expect)
			}
		})
	}
}

// generateChannelVectors computes every vector from fixed inputs:
// Ed25519 and XChaCha20-Poly1305 are deterministic given key and nonce.
func generateChannelVectors(t *testing.T) []byte {
	t.Helper()
	const (
		room     = vectorRoom
		ts       = vectorTS
		windowMS = int64(60000)
		inbox    = "_INBOX.vectors.1"
	)
	f := channelVectorFile{
		Comment: []string{
			"Test vectors for unibus encrypted room channel messages; see docs/protocol.md §19.",
			"Generated by client/channel_vectors_test.go (go test ./client -run TestChannelVectors -update-channel). Do not edit.",
			"The seeds and room keys are public test values: never use them for anything else.",
			"message_key = HKDF-SHA256(ikm = room key of the epoch, salt = empty, info = key_label), 32 bytes.",
			"sender..sig_hex describe what was sealed and signed; message_hex is what is received (a vector may alter it afterwards).",
			"Check message_hex as check_kind (0 message, 1 reply; check_re_hex: the request id a reply must answer) on check_room, received with NATS reply subject check_reply, at check_now_ms, with members and current_epoch as the service lists them.",
			"Order: parse strictly (malformed), room/kind/re and no reply subject on a frame (misplaced), |check_now_ms - ts| <= window_ms (stale), sender in members (not_member), epoch <= current_epoch (unknown_epoch), since <= epoch (other_epoch), signature (bad_signature), AEAD open (bad_ciphertext), a frame's entries (malformed), ids distinct and unseen, starting from an empty replay window (replay), then ok with plaintext_hex (a frame: messages_hex).",
			"A frame (version 2) carries ids_hex (its message ids; the first is the AEAD nonce, nonce_hex); its plaintext_hex is the entries u32be(len) || message, and messages_hex the messages delivered in order. Its canonical_hex has frame_sign_label and SHA-256(ct) in place of sign_label and ct.",
		},
		SignLabel: ChannelSignLabel, FrameLabel: ChannelFrameSignLabel, KeyLabel: ChannelKeyLabel, Room: room, Epoch: 2, WindowMS: windowMS,
		RoomKeys: map[string]string{}, MsgKeys: map[string]string{},
	}
	keys := map[uint64][]byte{1: seq(0x40, 32), 2: seq(0x80, 32), 3: seq(0xc0, 32)}
	for e := uint64(1); e <= 3; e++ {
		f.RoomKeys[epochName(e)] = hex.EncodeToString(keys[e])
		k, err := channelKey(keys[e])
		if err != nil {
			t.Fatal(err)
		}
		f.MsgKeys[epochName(e)] = hex.EncodeToString(k)
	}
	signers := map[string]nkeys.KeyPair{}
	for i, name := range []string{"alice", "bob", "carol", "dave"} {
		kp, err := nkeys.FromRawSeed(nkeys.PrefixByteUser, seq(byte(i*32), 32))
		if err != nil {
			t.Fatal(err)
		}
		signers[name] = kp
		if name == "dave" {
			continue // registered, not a member
		}
		seed, _ := kp.Seed()
		pub, _ := kp.PublicKey()
		since := uint64(1)
		if name == "carol" {
			since = 2
		}
		f.Members = append(f.Members, channelVectorMember{Endpoint: name, Seed: string(seed), SignKey: pub, Since: since})
	}

	// seal builds a vector for sender at epoch; sealEpoch's key is used
	// (normally the same epoch).
	seal := func(sender string, kind byte, epoch, sealEpoch uint64, nonceStart byte, re []byte, reply string, plain []byte) channelVector {
		m := &channelMsg{kind: kind, room: room, epoch: epoch, sender: sender, ts: ts, re: re}
		copy(m.nonce[:], seq(nonceStart, channelNonceSize))
		aead, err := channelAEAD(keys[sealEpoch])
		if err != nil {
			t.Fatal(err)
		}
		wire, err := sealChannel(nil, m, aead, signers[sender].Sign, reply, plain)
		if err != nil {
			t.Fatal(err)
		}
		pm, err := parseChannel(wire)
		if err != nil {
			t.Fatal(err)
		}
		return channelVector{
			Sender: sender, Kind: kind, Epoch: epoch, TS: ts, NonceHex: hex.EncodeToString(m.nonce[:]),
			ReHex: hex.EncodeToString(re), Reply: reply, PlainHex: hex.EncodeToString(plain),
			HeaderHex: hex.EncodeToString(pm.header), CanonicalHex: hex.EncodeToString(channelCanonical(pm.header, reply, pm.ct)),
			SigHex: hex.EncodeToString(pm.sig), MessageHex: hex.EncodeToString(wire),
			CheckRoom: room, CheckKind: kind, CheckReHex: hex.EncodeToString(re), CheckReply: reply, CheckNowMS: ts, Expect: "ok",
		}
	}
	hello := []byte("hello, room")
	ok := seal("alice", channelKindMessage, 1, 1, 0x00, nil, "", hello)
	request := seal("alice", channelKindMessage, 2, 2, 0x20, nil, inbox, []byte("ping"))
	reqID, _ := hex.DecodeString(request.NonceHex)
	reply := seal("bob", channelKindReply, 2, 2, 0x40, reqID, "", []byte("pong"))

	var vs []channelVector
	add := func(base channelVector, name, desc string, change func(v *channelVector)) {
		v := base
		v.Name, v.Description = name, desc
		change(&v)
		vs = append(vs, v)
	}
	alter := func(v *channelVector, f func(b []byte) []byte) {
		b, _ := hex.DecodeString(v.MessageHex)
		v.MessageHex = hex.EncodeToString(f(b))
	}
	headerLen := len(ok.HeaderHex) / 2

	add(ok, "ok", "alice (member since 1) at epoch 1, checked at its own ts.", func(v *channelVector) {})
	add(ok, "ok_window_edge", "Checked exactly window_ms after ts: accepted (inclusive).", func(v *channelVector) { v.CheckNowMS = ts + windowMS })
	add(request, "ok_request", "A request at epoch 2: the NATS reply subject is signed.", func(v *channelVector) {})
	add(reply, "ok_reply", "bob's reply (kind 1) to ok_request, carrying its id as re.", func(v *channelVector) {})
	add(ok, "stale", "Checked window_ms+1 after ts.", func(v *channelVector) { v.CheckNowMS = ts + windowMS + 1; v.Expect = "stale" })
	add(ok, "misplaced_other_room", "Received on room dev's channel: the room id differs.", func(v *channelVector) { v.CheckRoom = "dev"; v.Expect = "misplaced" })
	add(reply, "misplaced_reply_as_message", "ok_reply received on the room subject, as a message.", func(v *channelVector) {
		v.CheckKind, v.CheckReHex, v.Expect = channelKindMessage, "", "misplaced"
	})
	add(reply, "misplaced_reply_other_request", "ok_reply received as the answer to another request id.", func(v *channelVector) {
		v.CheckReHex, v.Expect = hex.EncodeToString(seq(0x99, 24)), "misplaced"
	})
	add(request, "bad_signature_redirected", "ok_request received with another reply subject (its replies redirected).", func(v *channelVector) {
		v.CheckReply, v.Expect = "_INBOX.evil", "bad_signature"
	})
	add(ok, "bad_signature_tampered", "The last ciphertext byte flipped after signing.", func(v *channelVector) {
		alter(v, func(b []byte) []byte { b[len(b)-channelSigSize-1] ^= 1; return b })
		v.Expect = "bad_signature"
	})
	add(ok, "bad_signature_moved_epoch", "The epoch field rewritten from 1 to 2 (moved to another epoch).", func(v *channelVector) {
		alter(v, func(b []byte) []byte { binary.BigEndian.PutUint64(b[3+len(room):], 2); return b })
		v.Expect = "bad_signature"
	})
	add(ok, "bad_signature_resigned_as_alice", "bob re-signs alice's message unchanged with his own key.", func(v *channelVector) {
		alter(v, func(b []byte) []byte {
			sig, _ := signers["bob"].Sign(channelCanonical(b[:headerLen], "", b[headerLen+4:len(b)-channelSigSize]))
			return append(b[:len(b)-channelSigSize], sig...)
		})
		v.Expect = "bad_signature"
	})
	add(ok, "bad_ciphertext_resigned_as_bob", "bob takes alice's ciphertext, names himself sender and signs: the header is the AEAD's associated data, so it no longer opens.", func(v *channelVector) {
		alter(v, func(b []byte) []byte {
			m := &channelMsg{kind: channelKindMessage, room: room, epoch: 1, sender: "bob", ts: ts}
			copy(m.nonce[:], seq(0x00, channelNonceSize))
			h := m.appendHeader(nil)
			ct := b[headerLen+4 : len(b)-channelSigSize]
			sig, _ := signers["bob"].Sign(channelCanonical(h, "", ct))
			out := binary.BigEndian.AppendUint32(h, uint32(len(ct)))
			return append(append(out, ct...), sig...)
		})
		v.Expect = "bad_ciphertext"
	})
	add(seal("alice", channelKindMessage, 2, 1, 0x60, nil, "", hello), "bad_ciphertext_wrong_key", "Labelled epoch 2 but sealed under epoch 1's key.", func(v *channelVector) { v.Expect = "bad_ciphertext" })
	add(seal("carol", channelKindMessage, 1, 1, 0x80, nil, "", hello), "other_epoch", "carol (member since 2) at epoch 1.", func(v *channelVector) { v.Expect = "other_epoch" })
	add(seal("dave", channelKindMessage, 2, 2, 0xa0, nil, "", hello), "not_member", "dave is no member of the room.", func(v *channelVector) { v.Expect = "not_member" })
	add(seal("alice", channelKindMessage, 3, 3, 0xc0, nil, "", hello), "unknown_epoch", "alice at epoch 3; the room is at 2.", func(v *channelVector) { v.Expect = "unknown_epoch" })
	add(ok, "malformed_version_3", "version byte 3.", func(v *channelVector) {
		alter(v, func(b []byte) []byte { b[0] = 3; return b })
		v.Expect = "malformed"
	})
	add(ok, "malformed_truncated", "The last byte of the signature missing.", func(v *channelVector) {
		alter(v, func(b []byte) []byte { return b[:len(b)-1] })
		v.Expect = "malformed"
	})
	add(ok, "malformed_trailing", "One byte after the signature.", func(v *channelVector) {
		alter(v, func(b []byte) []byte { return append(b, 0) })
		v.Expect = "malformed"
	})
	add(ok, "malformed_room_id", "The room id's first byte replaced by '.' (not an id).", func(v *channelVector) {
		alter(v, func(b []byte) []byte { b[3] = '.'; return b })
		v.Expect = "malformed"
	})
	add(ok, "malformed_ct_len_huge", "ct_len = 2^32-1.", func(v *channelVector) {
		alter(v, func(b []byte) []byte { binary.BigEndian.PutUint32(b[headerLen:], 0xffffffff); return b })
		v.Expect = "malformed"
	})
	addFrameVectors(t, keys, signers, add, alter)
	f.Vectors = vs
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(f); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// seq returns n bytes start, start+1, …
func seq(start byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}
