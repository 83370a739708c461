// Package envelope builds, signs, encodes, decodes and verifies the signed
// request envelope of the unibus membership protocol.
//
// An envelope is a msgpack map with exactly these string keys:
//
//	v          uint     protocol version, 1
//	ts         int      signing time, Unix milliseconds
//	nonce      bin      16–64 random bytes, never reused by a signer
//	signer     str      the signer's nkeys user public key ("U…", 56 chars)
//	body_hash  bin      SHA-256 of body, 32 bytes
//	sig        bin      Ed25519 signature over [Canonical], 64 bytes
//	body       bin      the operation's request, itself msgpack
//
// The signature covers the canonical bytes (see [Canonical]): a domain label
// and the subject the request is sent to, ts, nonce, signer and body hash,
// each variable-length field prefixed by its length as a big-endian uint32.
// Binding the subject stops a signature for one operation being replayed
// against another; the label stops a signature made for another protocol
// being accepted here.
//
// Decoding is strict (see [Unmarshal]): msgpack is scanned before it is
// decoded, every declared length is checked against the bytes that are left,
// nesting is bounded, map keys must be unique strings and nothing may trail
// the value. That is what keeps msgpack/v5's unbounded allocations (a 5-byte
// `dd ff ff ff ff` asks for 4 Gi elements) out of reach of a caller.
//
// docs/protocol.md describes every byte; testdata/vectors.json holds vectors
// that another implementation can check itself against.
package envelope
