package api

import (
	"crypto/sha256"
	"encoding/binary"
	"strings"
)

// Domain labels of what the service signs. Each is distinct from the
// request label (envelope.Label), so no signature made for one purpose
// verifies for another.
const (
	ReplyLabel        = "unibus-membership-reply-v1"
	ReplyRequestLabel = "unibus-membership-reply-to-request-v1"
	AuditLabel        = "unibus-membership-audit-v1"
	RotationLabel     = "unibus-membership-key-rotation-v1"
)

// ReplyCanonical returns the bytes the service signs for a reply
// (docs/protocol.md §16):
//
//	u32be(len(ReplyLabel)) ReplyLabel
//	u32be(len(nonce))      nonce       the request's nonce
//	u32be(code)                        200, 208 or the error code
//	u32be(len(reason))     reason      Unibus-Error-Reason; empty on success
//	u32be(32)              sha256(body)
//
// Binding the nonce ties the reply to one request: a recorded signed reply
// cannot answer another request. Every field carries its length. The error
// text (Nats-Service-Error) is not covered: NATS header encoding may trim
// it, and programs act on the code and reason, which are.
func ReplyCanonical(nonce []byte, code int, reason string, body []byte) []byte {
	return replyCanonical(ReplyLabel, nonce, code, reason, body)
}

// ReplyToRequestCanonical returns the bytes the service signs for a reply
// to a request whose nonce it could not read (too large, not a strict map,
// no nonce of 16–64 bytes): the same layout as [ReplyCanonical] under
// [ReplyRequestLabel], with SHA-256 of the request's bytes in the nonce's
// place. The sender knows those bytes, so such a reply too is bound to one
// request; the distinct label keeps a 32-byte nonce and a request hash
// from ever standing for each other.
func ReplyToRequestCanonical(request []byte, code int, reason string, body []byte) []byte {
	sum := sha256.Sum256(request)
	return replyCanonical(ReplyRequestLabel, sum[:], code, reason, body)
}

func replyCanonical(label string, binding []byte, code int, reason string, body []byte) []byte {
	sum := sha256.Sum256(body)
	b := make([]byte, 0, 4*5+len(label)+len(binding)+len(reason)+len(sum))
	b = appendField(b, []byte(label))
	b = appendField(b, binding)
	b = binary.BigEndian.AppendUint32(b, uint32(code))
	b = appendField(b, []byte(reason))
	b = appendField(b, sum[:])
	return b
}

func appendField(b, f []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
	return append(b, f...)
}

// Audit chain names ([AuditEntry.Chain]): one chain per room, room.<id>, and
// one for the identity registry. Room ids have no dots, so chains of
// different rooms never share a prefix, and the identities chain, without
// the room. prefix, cannot collide with a room's.
const (
	IdentitiesChain = "identities" // the identity registry's chain
	roomChainPrefix = "room."
)

// RoomChain names room's audit chain.
func RoomChain(room string) string { return roomChainPrefix + room }

// ChainRoom returns the room whose chain chain is, "" for [IdentitiesChain];
// ok is false for a name that is neither.
func ChainRoom(chain string) (room string, ok bool) {
	if chain == IdentitiesChain {
		return "", true
	}
	room, ok = strings.CutPrefix(chain, roomChainPrefix)
	if !ok || room == "" {
		return "", false
	}
	return room, true
}

// AuditEntry is one entry of a room's (or the identity registry's) audit
// chain. The service signs [AuditEntry.Hash] with its key; Prev is the hash
// of the entry before it (32 zero bytes for the first), so removing,
// reordering or rewriting any entry breaks every later link.
type AuditEntry struct {
	Chain       string `msgpack:"chain"`        // RoomChain(id) or IdentitiesChain
	Seq         uint64 `msgpack:"seq"`          // 1, 2, 3, … within the chain
	Op          string `msgpack:"op"`           // operation, e.g. room.add
	Actor       string `msgpack:"actor"`        // signer's endpoint
	ActorKey    string `msgpack:"actor_key"`    // signer's public key
	Target      string `msgpack:"target"`       // endpoint acted on, if any
	Room        string `msgpack:"room"`         // room id; empty for identity operations
	Epoch       uint64 `msgpack:"epoch"`        // room epoch after the operation
	RequestHash []byte `msgpack:"request_hash"` // digest of the signed request
	Time        int64  `msgpack:"time"`         // Unix milliseconds, service clock
	Prev        []byte `msgpack:"prev"`         // hash of entry Seq-1
	ServiceKey  string `msgpack:"service_key"`  // key that signed it (informative)
	Sig         []byte `msgpack:"sig"`          // service signature over Hash()
}

// AuditCanonical returns the bytes an entry's hash covers: every field but
// ServiceKey and Sig, length-prefixed after [AuditLabel].
func (e *AuditEntry) AuditCanonical() []byte {
	b := appendField(nil, []byte(AuditLabel))
	b = appendField(b, []byte(e.Chain))
	b = binary.BigEndian.AppendUint64(b, e.Seq)
	b = appendField(b, []byte(e.Op))
	b = appendField(b, []byte(e.Actor))
	b = appendField(b, []byte(e.ActorKey))
	b = appendField(b, []byte(e.Target))
	b = appendField(b, []byte(e.Room))
	b = binary.BigEndian.AppendUint64(b, e.Epoch)
	b = appendField(b, e.RequestHash)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Time))
	b = appendField(b, e.Prev)
	return b
}

// Hash is SHA-256 of the entry's canonical bytes: the next entry's Prev and
// what the service signs.
func (e *AuditEntry) Hash() [32]byte { return sha256.Sum256(e.AuditCanonical()) }

// AuditRequest asks for a page of a room's audit entries with Seq > After.
type AuditRequest struct {
	Room  string `msgpack:"room"`
	After uint64 `msgpack:"after"`
	Limit int    `msgpack:"limit"`
}

// IdentityAuditRequest asks for a page of the identities chain's entries
// with Seq > After (admins only).
type IdentityAuditRequest struct {
	After uint64 `msgpack:"after"`
	Limit int    `msgpack:"limit"`
}

// AuditPage is one page of audit entries in Seq order; Next is the cursor
// for the following page, 0 on the last.
type AuditPage struct {
	Entries []AuditEntry `msgpack:"entries"`
	Next    uint64       `msgpack:"next"`
}

// RotationCanonical returns the bytes of a key-rotation statement
// (docs/protocol.md §16): the old service key, signing them, names the new
// one.
//
//	u32be(len(RotationLabel)) RotationLabel
//	u32be(56)                 old   the N… key that signs
//	u32be(56)                 new   the N… key it hands over to
//
// A client that pinned old moves its pin to new only through this
// statement; the label keeps it apart from every other signature.
func RotationCanonical(old, new string) []byte {
	b := appendField(nil, []byte(RotationLabel))
	b = appendField(b, []byte(old))
	return appendField(b, []byte(new))
}

// Metadata keys of a rotation statement in the service's micro info.
const (
	MetaServiceKey  = "service_key"
	MetaPreviousKey = "previous_service_key"
	MetaRotationSig = "key_rotation_sig"
)
