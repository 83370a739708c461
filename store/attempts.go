package store

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
)

// firstGetAttempt bounds the first attempt of a read or an idempotent
// write (a sealed-key object: same name, same bytes); each further attempt gets
// twice as long, within the caller's deadline. A read of the last message
// on a subject is a direct get that any replica of the stream may answer;
// one sent to a node that is shutting down (a rolling restart) is never
// answered, and without a bound per attempt it would hold the request for
// its whole timeout. A read has no effect, so asking again is safe. On
// loopback or a LAN a direct get takes about a millisecond, so the bound
// only ever cuts a lost one.
const firstGetAttempt = 250 * time.Millisecond

// writeAttempt bounds one attempt of a write whose resend is not
// idempotent here (a batch commit, a read claim). A stream leader that steps
// down (a node's SIGTERM or lame-duck mode, each rolling restart) drops the
// proposals it had not yet committed without answering them, and the
// writer would wait out its whole request timeout; ended at this bound the
// write fails as unavailable, and the client resends (the same signed
// mutation, whose nonce tells whether the first copy committed; a read
// signed again). An acknowledgement normally takes milliseconds, fsync
// included; this bound is far above that, so it only cuts a lost one or a
// store that is failing anyway.
const writeAttempt = time.Second

// boundWrite is ctx bounded by writeAttempt.
func boundWrite(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, writeAttempt)
}

// retryLost runs get with a bounded attempt, again with a doubled bound
// when an attempt ran out of time while ctx did not.
func retryLost[T any](ctx context.Context, get func(context.Context) (T, error)) (T, error) {
	for bound := firstGetAttempt; ; bound *= 2 {
		actx, cancel := context.WithTimeout(ctx, bound)
		v, err := get(actx)
		cancel()
		lost := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)
		if err == nil || ctx.Err() != nil || !lost {
			return v, err
		}
	}
}
