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

// kinds is the one table of what each kind means on the wire and to a
// person: its code (in micro's Nats-Service-Error-Code header), its reason
// token ([subjects.HeaderReason]) and its description. A kind without a row
// is treated as [KindOther].
var kinds = [...]struct {
	code   int
	reason string // wire token, stable: clients map it back with KindFromReason
	text   string // for people: String
}{
	KindOther:           {subjects.CodeInternal, "other", "unclassified error"},
	KindInvalid:         {subjects.CodeBadRequest, "invalid", "invalid request"},
	KindTooLarge:        {subjects.CodeTooLarge, "too_large", "request too large"},
	KindUnauthenticated: {subjects.CodeUnauthorized, "unauthenticated", "not authenticated"},
	KindReplay:          {subjects.CodeUnauthorized, "replay", "nonce used before"},
	KindForbidden:       {subjects.CodeForbidden, "forbidden", "not allowed"},
	KindNotFound:        {subjects.CodeNotFound, "not_found", "does not exist"},
	KindExists:          {subjects.CodeConflict, "exists", "already exists"},
	KindConflict:        {subjects.CodeConflict, "conflict", "lost to a concurrent change"},
	KindUnavailable:     {subjects.CodeUnavailable, "unavailable", "service unavailable"},
	KindInternal:        {subjects.CodeInternal, "internal", "internal error"},
	KindAlreadyApplied:  {subjects.CodeAlreadyApplied, "already_applied", "already applied"},
	KindRateLimited:     {subjects.CodeTooMany, "rate_limited", "rate limited"},
	KindNonceFloor:      {subjects.CodeUnauthorized, "nonce_floor", "stamped before the read-nonce floor"},
}

// row is k's row of the table, KindOther's for an unknown kind.
func (k Kind) row() int {
	if k < 0 || int(k) >= len(kinds) {
		return int(KindOther)
	}
	return int(k)
}

// Code is the wire code of k.
func (k Kind) Code() int { return kinds[k.row()].code }

// Reason is the short token of k that travels in [subjects.HeaderReason]
// (invalid, replay, not_found, …) and in the error line of memberctl.
func (k Kind) Reason() string { return kinds[k.row()].reason }

// String describes k for people ("does not exist"); the wire uses
// [Kind.Reason].
func (k Kind) String() string { return kinds[k.row()].text }

// KindFromReason maps a reason token back to its kind, KindOther for a
// token the protocol does not have.
func KindFromReason(reason string) Kind {
	for k := KindInvalid; k <= KindLast; k++ {
		if kinds[k].reason == reason {
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

func (e *Error) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Kind.Code(), e.Kind.Reason(), e.Message)
}

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
