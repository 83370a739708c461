// Package subjects is the one source of truth for every NATS subject, header
// name, bucket name and wire error code of the unibus membership protocol.
//
// Operation subjects are <prefix>.<op>, where the default prefix is
// [DefaultPrefix] ("unibus.membership.v1"). The version is part of the
// prefix, so a v2 protocol can be served beside v1.
package subjects
