// Package service serves the unibus membership protocol as NATS micro
// endpoints.
//
// Each request passes one pipeline (pipeline.go), cheapest check first:
// size and strict decode, time window, body hash, signature, active signer,
// nonce claim (nonce.go), then the operation's authorization (authz.go, one
// rule per operation) and its own rules (identity.go; rooms.go for the room
// mutations, roomreads.go for the room reads). The signer is looked up
// before any nonce is written, so keys that are not registered cannot fill
// the nonce space (H7). A refused request's outcome travels up in its
// error, and one function turns it into the reply (reject.go). Store errors
// never reach a caller: they are logged and answered with a fixed generic
// text (H12).
package service
