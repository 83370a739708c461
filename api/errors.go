package api

import (
	"errors"
	"fmt"

	"github.com/unibus/membership/subjects"
)

// Kind classifies an error. Tests assert the kind, not the text. Append
// only: values are stable.
type Kind int

const (
	KindOther           Kind = iota
	KindInvalid              // 400: the request is malformed or breaks a rule
	KindTooLarge             // 413: a size or count limit
	KindUnauthenticated      // 401: stale, bad signature, unknown or disabled signer
	KindReplay               // 401: the nonce was used before
	KindForbidden            // 403: the signer may not do this
	KindNotFound             // 404
	KindExists               // 409: the thing already exists
	KindConflict             // 409: a concurrent change won; retry
	KindUnavailable          // 503: the store cannot be reached; nothing was accepted
	KindInternal             // 500
	KindAlreadyApplied       // 208: this very signed mutation was applied before
	KindRateLimited          // 429
	KindNonceFloor           // 401: a read stamped before the read-nonce floor; restamp (docs/protocol.md)
)

// KindLast is the highest kind in use.
const KindLast = KindNonceFloor

var kindCodes = map[Kind]int{
	KindInvalid:         subjects.CodeBadRequest,
	KindTooLarge:        subjects.CodeTooLarge,
	KindUnauthenticated: subjects.CodeUnauthorized,
	KindReplay:          subjects.CodeUnauthorized,
	KindForbidden:       subjects.CodeForbidden,
	KindNotFound:        subjects.CodeNotFound,
	KindExists:          subjects.CodeConflict,
	KindConflict:        subjects.CodeConflict,
	KindUnavailable:     subjects.CodeUnavailable,
	KindInternal:        subjects.CodeInternal,
	KindAlreadyApplied:  subjects.CodeAlreadyApplied,
	KindRateLimited:     subjects.CodeTooMany,
	KindNonceFloor:      subjects.CodeUnauthorized,
}

// Code is the wire code of k.
func (k Kind) Code() int {
	if c, ok := kindCodes[k]; ok {
		return c
	}
	return subjects.CodeInternal
}

// Reason is the short token of each kind, sent in [subjects.HeaderReason].
func (k Kind) String() string {
	switch k {
	case KindInvalid:
		return "invalid"
	case KindTooLarge:
		return "too_large"
	case KindUnauthenticated:
		return "unauthenticated"
	case KindReplay:
		return "replay"
	case KindForbidden:
		return "forbidden"
	case KindNotFound:
		return "not_found"
	case KindExists:
		return "exists"
	case KindConflict:
		return "conflict"
	case KindUnavailable:
		return "unavailable"
	case KindInternal:
		return "internal"
	case KindAlreadyApplied:
		return "already_applied"
	case KindRateLimited:
		return "rate_limited"
	case KindNonceFloor:
		return "nonce_floor"
	}
	return "other"
}

// KindFromReason maps a reason token back to its kind.
func KindFromReason(reason string) Kind {
	for k := KindInvalid; k <= KindLast; k++ {
		if k.String() == reason {
			return k
		}
	}
	return KindOther
}

// Error is the protocol's error: a kind and a message that is always safe to
// publish (it shows in replies and in `nats micro stats`).
type Error struct {
	Kind    Kind
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s: %s", e.Kind.Code(), e.Kind, e.Message) }

// Is matches any *Error of the same kind, so errors.Is(err, api.ErrReplay)
// works whatever the message.
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Kind == e.Kind && t.Message == ""
}

// E builds an *Error of kind k with a formatted message.
func E(k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Message: fmt.Sprintf(format, args...)}
}

// Sentinels for errors.Is; they carry no message.
var (
	ErrInvalid         = &Error{Kind: KindInvalid}
	ErrTooLarge        = &Error{Kind: KindTooLarge}
	ErrUnauthenticated = &Error{Kind: KindUnauthenticated}
	ErrReplay          = &Error{Kind: KindReplay}
	ErrForbidden       = &Error{Kind: KindForbidden}
	ErrNotFound        = &Error{Kind: KindNotFound}
	ErrExists          = &Error{Kind: KindExists}
	ErrConflict        = &Error{Kind: KindConflict}
	ErrUnavailable     = &Error{Kind: KindUnavailable}
	ErrInternal        = &Error{Kind: KindInternal}
	ErrAlreadyApplied  = &Error{Kind: KindAlreadyApplied}
	ErrRateLimited     = &Error{Kind: KindRateLimited}
	ErrNonceFloor      = &Error{Kind: KindNonceFloor}
)

// KindOf returns the kind of err, or KindOther.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindOther
}
