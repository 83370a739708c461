package store

import (
	"context"
	"errors"
	"time"
)

// firstGetAttempt bounds a read's first attempt; each further attempt gets
// twice as long, within the caller's deadline. A read of the last message
// on a subject is a direct get that any replica of the stream may answer;
// one sent to a node that is shutting down (a rolling restart) is never
// answered, and without a bound per attempt it would hold the request for
// its whole timeout. A read has no effect, so asking again is safe. On
// loopback or a LAN a direct get takes about a millisecond, so the bound
// only ever cuts a lost one.
const firstGetAttempt = 250 * time.Millisecond

// retryLost runs get with a bounded attempt, again with a doubled bound
// when an attempt ran out of time while ctx did not.
func retryLost[T any](ctx context.Context, get func(context.Context) (T, error)) (T, error) {
	for bound := firstGetAttempt; ; bound *= 2 {
		actx, cancel := context.WithTimeout(ctx, bound)
		v, err := get(actx)
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return v, err
		}
	}
}
