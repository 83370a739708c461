// Package subjects is the one source of truth for every NATS subject, header
// name, bucket name and wire error code of the unibus membership protocol.
// micro's own names (the Nats-Service-Error headers, the $SRV control
// subjects) are used from nats.go's micro package, not retyped here, so this
// package depends on nothing and the protocol packages above it (envelope,
// api) need no NATS client.
//
// Operation subjects are <prefix>.<op>, where the default prefix is
// [DefaultPrefix] ("unibus.membership.v1"). The version is part of the
// prefix, so a v2 protocol can be served beside v1. Which operations exist
// with which bodies, and which mutate, is the operation table api.Ops.
package subjects
