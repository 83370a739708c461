package service

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// KV key families: this is the one place that spells them (the audit
// chain's keys are in audit.go). Every key is a family prefix followed by
// tokens; every id is validated ([api.ValidateID]) before it becomes a key
// token, so no caller can address another key family.
const (
	famIdentity = "id."      // id.<endpoint>: the identity record
	famSigner   = "signer."  // signer.<signing key>: its endpoint
	famRoom     = "room."    // room.<room>: the room record
	famMember   = "member."  // member.<room>.<endpoint>: a membership
	famEpRooms  = "eprooms." // eprooms.<endpoint>.<room>: an endpoint's rooms
	famOwed     = "owed."    // owed.<room>: a rekey is owed
	famEpoch    = "epoch."   // epoch.<room>.<n>: an epoch's key bundle
	famSubject  = "subject." // subject.<sha256>: a room subject in use
	famNonce    = "nonce."   // nonce.<signer>.<sha256>: a mutation's claimed nonce
)

func keyIdentity(endpoint string) string     { return famIdentity + endpoint }
func keySigner(pub string) string            { return famSigner + pub }
func keyRoom(room string) string             { return famRoom + room }
func keyMember(room, endpoint string) string { return prefixMembers(room) + endpoint }
func prefixMembers(room string) string       { return famMember + room + "." }
func keyEpRoom(endpoint, room string) string { return prefixEpRooms(endpoint) + room }
func prefixEpRooms(endpoint string) string   { return famEpRooms + endpoint + "." }

// keyOwed marks a room that owes a rekey; the stats count these keys.
func keyOwed(room string) string { return famOwed + room }

func keyEpoch(room string, epoch uint64) string { return fmt.Sprintf("%s%s.%d", famEpoch, room, epoch) }

// keySubject indexes room subjects by hash: a subject may hold characters a
// KV key may not.
func keySubject(subject string) string {
	sum := sha256.Sum256([]byte(subject))
	return famSubject + hex.EncodeToString(sum[:])
}

// keyNonce is where a signer's nonce is claimed. Hashing the nonce keeps the
// key within KV's alphabet whatever bytes the nonce holds.
func keyNonce(signer string, nonce []byte) string {
	sum := sha256.Sum256(nonce)
	return famNonce + signer + "." + hex.EncodeToString(sum[:])
}

// memberRecord is one membership. Since is the first epoch whose key the
// member may fetch. KeyEpoch/KeyObject point at the key sealed for it when it
// was added mid-epoch; keys from a rekey live in that epoch's bundle.
type memberRecord struct {
	Since     uint64 `msgpack:"since"`
	KeyEpoch  uint64 `msgpack:"key_epoch"`
	KeyObject string `msgpack:"key_object"`
	Sealer    string `msgpack:"sealer"`
}

// epochRecord points at the bundle of sealed keys written by the create or
// rekey that started the epoch.
type epochRecord struct {
	Object string `msgpack:"object"`
	Sealer string `msgpack:"sealer"`
}

// bundle is the object holding an epoch's sealed keys, by endpoint.
type bundle struct {
	Keys map[string][]byte `msgpack:"keys"`
}

// objectName names a sealed-key object after the request that wrote it, so a
// failed request removes only its own objects.
func objectName(room string, epoch uint64, what string, digest [32]byte) string {
	return fmt.Sprintf("%s/%d/%s-%s", room, epoch, what, hex.EncodeToString(digest[:16]))
}
