// Package client is the typed Go client of the unibus membership service. It
// signs every request with the caller's nkeys user key, seals and opens room
// keys with the caller's nkeys curve (X25519) key, and resends a mutation
// whose reply was lost as the very same signed request, which the service
// answers "already applied" if the first attempt committed.
//
// It trusts nothing it reads from NATS: every reply is decoded with the
// protocol's strict, bounded decoder ([ErrMalformedReply]), and its
// signature verified against the pinned service key ([WithServiceKey]; by
// default the key of the first verified reply, moved only through a
// rotation statement signed by it; [WithUnverifiedReplies] opts out), bound
// to the request it answers (docs/protocol.md §16).
//
// [Client.Channel] talks in a room: messages on the room's subject sealed
// under the epoch's room key and signed by the sender (docs/protocol.md §19).
//
// Errors from the service are *api.Error values; match them with errors.Is
// and the sentinels re-exported here ([ErrForbidden], [ErrReplay], …).
package client
