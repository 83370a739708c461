// Package store keeps membership state and mutation nonces in JetStream KV
// buckets — a base bucket and the room shards (layout.go) — sealed room
// keys in a JetStream object store, and read nonces in a memory stream
// (readclaims.go).
//
// A mutation is one JetStream atomic batch ([Shard.Commit]) in one shard:
// each written key carries the revision it was read at (compare-and-set),
// and the request's nonce key carries revision 0, so the nonce claim and
// the state change commit together or not at all. A batch can only span
// one stream, which is why a room's nonces share its shard with its state.
//
// Reads ([Shard.Get]) go to the stream leader, not to a direct-get follower:
// a replicated bucket's stream has AllowDirect off, so an authorization
// decision taken right after a membership change sees that change. A
// single-replica stream has no followers; it answers direct gets, which
// cost less than API calls.
package store
