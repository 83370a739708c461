package api

import (
	"regexp"

	"github.com/unibus/membership/envelope"
	"github.com/unibus/membership/subjects"
)

// Limits on what a caller controls. Each breach is answered 400 or 413.
const (
	MaxIDLen          = 64    // endpoint and room ids
	MaxSealedKey      = 256   // one sealed room key, bytes
	MaxInitialMembers = 256   // members in one create request
	MaxRekeyMembers   = 10000 // sealed keys in one rekey request
	MaxPage           = 500   // page size
	DefaultPage       = 100
)

var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// ValidateID checks an endpoint or room id: 1–64 characters of A–Z a–z 0–9 _ -.
// Dots are excluded because ids become tokens of KV keys and subjects.
func ValidateID(what, id string) error {
	switch {
	case id == "":
		return E(KindInvalid, "%s is required", what)
	case len(id) > MaxIDLen:
		return E(KindInvalid, "%s is longer than %d characters", what, MaxIDLen)
	case !idPattern.MatchString(id):
		return E(KindInvalid, "%s %q may only contain A-Z a-z 0-9 _ -", what, id)
	}
	return nil
}

// ValidateSigningKey checks an nkeys user public key (U…).
func ValidateSigningKey(k string) error {
	if !envelope.IsUserKey(k) {
		return E(KindInvalid, "sign_key must be an nkeys user public key (U…)")
	}
	return nil
}

// ValidateXKey checks an nkeys curve public key (X…).
func ValidateXKey(what, k string) error {
	if !envelope.IsCurveKey(k) {
		return E(KindInvalid, "%s must be an nkeys curve public key (X…)", what)
	}
	return nil
}

// ValidateRoomSubject checks a room's NATS subject: literal, no wildcards.
func ValidateRoomSubject(s string) error {
	if err := subjects.ValidateSubject(s); err != nil {
		return E(KindInvalid, "room subject: %v", err)
	}
	return nil
}

// ValidateSealed checks one sealed key's size.
func ValidateSealed(k SealedKey) error {
	if err := ValidateID("member endpoint", k.Endpoint); err != nil {
		return err
	}
	switch {
	case len(k.Sealed) == 0:
		return E(KindInvalid, "sealed key for %s is empty", k.Endpoint)
	case len(k.Sealed) > MaxSealedKey:
		return E(KindTooLarge, "sealed key for %s is larger than %d bytes", k.Endpoint, MaxSealedKey)
	}
	return nil
}

// Page bounds: limit 0 means [DefaultPage].
func PageLimit(limit int) (int, error) {
	switch {
	case limit == 0:
		return DefaultPage, nil
	case limit < 0:
		return 0, E(KindInvalid, "limit must not be negative")
	case limit > MaxPage:
		return 0, E(KindTooLarge, "limit is larger than %d", MaxPage)
	}
	return limit, nil
}

// Identity is a registered endpoint.
type Identity struct {
	Endpoint string `msgpack:"endpoint"`
	SignKey  string `msgpack:"sign_key"`
	XKey     string `msgpack:"xkey"`
	Admin    bool   `msgpack:"admin"`
	Disabled bool   `msgpack:"disabled"`
	Created  int64  `msgpack:"created"` // Unix milliseconds, service clock
	Updated  int64  `msgpack:"updated"` // Unix milliseconds, service clock
}

// RegisterRequest registers an identity or replaces its keys and role (admin).
type RegisterRequest struct {
	Endpoint string `msgpack:"endpoint"`
	SignKey  string `msgpack:"sign_key"`
	XKey     string `msgpack:"xkey"`
	Admin    bool   `msgpack:"admin"`
}

// EndpointRequest names one endpoint (disable, enable, get).
type EndpointRequest struct {
	Endpoint string `msgpack:"endpoint"`
}

// PublicKeys is what any active identity may look up about another.
type PublicKeys struct {
	Endpoint string `msgpack:"endpoint"`
	SignKey  string `msgpack:"sign_key"`
	XKey     string `msgpack:"xkey"`
	Disabled bool   `msgpack:"disabled"`
}

// PageRequest asks for up to Limit items whose id sorts after After.
type PageRequest struct {
	After string `msgpack:"after"`
	Limit int    `msgpack:"limit"`
}

// IdentityPage is one page of identities; Next is empty on the last page.
type IdentityPage struct {
	Identities []Identity `msgpack:"identities"`
	Next       string     `msgpack:"next"`
}

// Empty is the body of requests that carry no fields (whoami).
type Empty struct{}

// SealedKey is a room key sealed (nkeys curve Seal) by the room owner's
// X25519 key to one member's X25519 key.
type SealedKey struct {
	Endpoint string `msgpack:"endpoint"`
	Sealed   []byte `msgpack:"sealed"`
}

// Room is a room as the service reports it.
type Room struct {
	ID        string `msgpack:"id"`
	Subject   string `msgpack:"subject"`
	Owner     string `msgpack:"owner"`
	OwnerKey  string `msgpack:"owner_key"` // owner's signing key at creation
	Epoch     uint64 `msgpack:"epoch"`
	RekeyOwed bool   `msgpack:"rekey_owed"`
	Members   int    `msgpack:"members"` // count, owner included
	Deleted   bool   `msgpack:"deleted"`
	Created   int64  `msgpack:"created"` // Unix milliseconds, service clock
	Updated   int64  `msgpack:"updated"` // Unix milliseconds, service clock
}

// CreateRoomRequest creates a room owned by the signer. Members must include
// the owner; each carries the epoch-1 room key sealed by Sealer, which must
// be the owner's registered xkey.
type CreateRoomRequest struct {
	ID      string      `msgpack:"id"`
	Subject string      `msgpack:"subject"`
	Sealer  string      `msgpack:"sealer"`
	Members []SealedKey `msgpack:"members"`
}

// RoomRequest names one room (get, leave, delete).
type RoomRequest struct {
	Room string `msgpack:"room"`
}

// MembersRequest asks for a page of a room's members.
type MembersRequest struct {
	Room  string `msgpack:"room"`
	After string `msgpack:"after"`
	Limit int    `msgpack:"limit"`
}

// Member is one member of a room with its public keys.
type Member struct {
	Endpoint string `msgpack:"endpoint"`
	SignKey  string `msgpack:"sign_key"`
	XKey     string `msgpack:"xkey"`
	Since    uint64 `msgpack:"since"` // first epoch whose key it may fetch
}

// MembersPage is one page of members.
type MembersPage struct {
	Members []Member `msgpack:"members"`
	Next    string   `msgpack:"next"`
}

// KeyRequest asks for the caller's own sealed key of a room; Epoch 0 means
// the current epoch.
type KeyRequest struct {
	Room  string `msgpack:"room"`
	Epoch uint64 `msgpack:"epoch"`
}

// KeyReply is the caller's sealed key; open it with the caller's xkey seed
// and Sealer.
type KeyReply struct {
	Room   string `msgpack:"room"`
	Epoch  uint64 `msgpack:"epoch"`
	Sealer string `msgpack:"sealer"`
	Sealed []byte `msgpack:"sealed"`
}

// AddMemberRequest adds a member with the current epoch's key sealed to it.
// Epoch must be the room's current epoch (else 409: the room was rekeyed).
type AddMemberRequest struct {
	Room   string    `msgpack:"room"`
	Epoch  uint64    `msgpack:"epoch"`
	Sealer string    `msgpack:"sealer"`
	Member SealedKey `msgpack:"member"`
}

// RemoveMemberRequest removes a member (owner only).
type RemoveMemberRequest struct {
	Room     string `msgpack:"room"`
	Endpoint string `msgpack:"endpoint"`
}

// RekeyRequest moves a room to Epoch (= current + 1) with exactly one sealed
// key per current member.
type RekeyRequest struct {
	Room   string      `msgpack:"room"`
	Epoch  uint64      `msgpack:"epoch"`
	Sealer string      `msgpack:"sealer"`
	Keys   []SealedKey `msgpack:"keys"`
}

// RoomPage is one page of the caller's rooms.
type RoomPage struct {
	Rooms []Room `msgpack:"rooms"`
	Next  string `msgpack:"next"`
}
