package subjects

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Service identity as registered with micro and shown by `nats micro ls`.
const (
	ServiceName     = "membership"
	ProtocolVersion = "1"
	DefaultPrefix   = "unibus.membership.v1"
	DefaultQueue    = "membership"
)

// Storage names.
const (
	DefaultBucket     = "membership"      // KV bucket: identities; with one room shard all state and nonces
	DefaultKeysBucket = "membership-keys" // object store: sealed room keys
)

// RoomShardBucket names room shard i of a deployment whose base bucket is
// bucket, in a deployment of more than one room shard (store/layout.go,
// docs/protocol.md "Shards"); its stream is KV_<name>.
func RoomShardBucket(bucket string, i int) string { return bucket + "-rooms-" + strconv.Itoa(i) }

// ReadClaimsStream names the stream that holds a bucket's read-nonce
// claims (memory storage; docs/security.md §4a).
func ReadClaimsStream(bucket string) string { return bucket + "-reads" }

// ReadClaims is the subject filter of a bucket's read-claims stream.
func ReadClaims(bucket string) string { return ReadClaimsPrefix(bucket) + ">" }

// ReadClaimsPrefix starts every subject of a bucket's read-claims stream.
func ReadClaimsPrefix(bucket string) string { return "$RN." + bucket + "." }

// ReadClaim is the subject a read's nonce is claimed on (the nonce is the
// message's deduplication id).
func ReadClaim(bucket string) string { return ReadClaimsPrefix(bucket) + "n" }

// ReadIncarnations starts the subjects of the read-claims stream's
// incarnation markers.
func ReadIncarnations(bucket string) string { return ReadClaimsPrefix(bucket) + "inc." }

// BusInboxPrefix is the inbox prefix of endpoint on a bus that enforces
// membership: its only replies subject. Clients connect with it
// (nats.CustomInboxPrefix, nats --inbox-prefix) and the callout grants
// nothing else to subscribe to, so no endpoint can read another's replies.
func BusInboxPrefix(endpoint string) string { return "_INBOX_" + endpoint }

// Op names an operation. Its subject is <prefix>.<Op>.
type Op string

// Every operation of protocol v1. The operation table (api.Ops) lists each
// with whether it mutates and its body types.
const (
	OpIdentityRegister Op = "identity.register"
	OpIdentityDisable  Op = "identity.disable"
	OpIdentityEnable   Op = "identity.enable"
	OpIdentityGet      Op = "identity.get"
	OpIdentityList     Op = "identity.list"
	OpWhoami           Op = "identity.whoami"

	OpRoomCreate  Op = "room.create"
	OpRoomGet     Op = "room.get"
	OpRoomMembers Op = "room.members"
	OpRoomKey     Op = "room.key"
	OpRoomAdd     Op = "room.add"
	OpRoomRemove  Op = "room.remove"
	OpRoomLeave   Op = "room.leave"
	OpRoomRekey   Op = "room.rekey"
	OpRoomDelete  Op = "room.delete"
	OpRoomMine    Op = "room.mine"
	OpRoomAudit   Op = "room.audit"

	OpIdentityAudit Op = "identity.audit"
)

// EndpointName is the micro endpoint name of op (micro names allow no dots).
func (op Op) EndpointName() string { return strings.ReplaceAll(string(op), ".", "_") }

// Subject is the subject op is served on under prefix.
func Subject(prefix string, op Op) string { return prefix + "." + string(op) }

// ValidatePrefix reports whether prefix can carry operation subjects: dot
// separated non-empty tokens without wildcards or white space.
func ValidatePrefix(prefix string) error {
	if err := ValidateSubject(prefix); err != nil {
		return fmt.Errorf("subject prefix: %w", err)
	}
	return nil
}

// ValidateSubject checks that s is a literal NATS subject: 1–255 bytes of
// non-empty dot-separated tokens, no wildcards (* or >), no white space or
// control characters.
func ValidateSubject(s string) error {
	if s == "" {
		return fmt.Errorf("subject is empty")
	}
	if len(s) > MaxSubjectLen {
		return fmt.Errorf("subject is longer than %d bytes", MaxSubjectLen)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("subject is not valid UTF-8")
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" {
			return fmt.Errorf("subject %q has an empty token", s)
		}
		if tok == "*" || tok == ">" || strings.ContainsAny(tok, "*>") {
			return fmt.Errorf("subject %q contains a wildcard", s)
		}
		for _, r := range tok {
			if r <= ' ' || r == 0x7f {
				return fmt.Errorf("subject %q contains white space or a control character", s)
			}
		}
	}
	return nil
}

// MaxSubjectLen bounds a room subject.
const MaxSubjectLen = 255

// Reply headers. The error code and text travel in micro's own headers
// (micro.ErrorCodeHeader "Nats-Service-Error-Code", micro.ErrorHeader
// "Nats-Service-Error"); these are the protocol's additions.
const (
	// HeaderReason carries the error kind as a token (stale, replay, …),
	// finer than the code.
	HeaderReason = "Unibus-Error-Reason"
	// HeaderRetryAfter carries, on a 429, how many milliseconds to wait
	// before the signer's next request can be accepted.
	HeaderRetryAfter = "Unibus-Retry-After-Ms"
	// HeaderNonceFloor carries, on a nonce_floor refusal of a read, the
	// earliest ts (Unix milliseconds) the service accepts for reads now:
	// read nonces claimed before may have been lost (docs/security.md).
	HeaderNonceFloor = "Unibus-Nonce-Floor-Ms"
	// HeaderServiceKey names the service's nkeys public key (N…) that
	// signed the reply; informative only: clients verify against the key
	// they were configured with, never against this header.
	HeaderServiceKey = "Unibus-Service-Key"
	// HeaderReplySig carries the service's Ed25519 signature over the
	// reply's canonical bytes (docs/protocol.md §16), unpadded base64url.
	HeaderReplySig = "Unibus-Reply-Sig"
)

// CodeOK is the status a successful reply is signed with; it never travels
// in micro's error code header.
const CodeOK = 200

// Wire error codes, HTTP-like, carried in micro's error code header
// (Nats-Service-Error-Code).
const (
	CodeAlreadyApplied = 208 // the same signed mutation was applied before; body = original reply
	CodeBadRequest     = 400
	CodeUnauthorized   = 401 // stale, bad signature, unknown/disabled signer, replay
	CodeForbidden      = 403
	CodeNotFound       = 404
	CodeConflict       = 409
	CodeTooLarge       = 413
	CodeTooMany        = 429
	CodeInternal       = 500
	CodeUnavailable    = 503
)
