package e2e

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nkeys"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/envelope"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/subjects"
)

// A sender that sees every attempt: mutations are sent the way the client
// library sends them (one signed request, resent unchanged after a
// timeout, no responders or 503), so that a test's figures (operations,
// acknowledged, retries) are exact.

var (
	// attemptTimeout bounds one attempt; it outlasts the service's own
	// store timeout, so an attempt ends with the service's answer.
	attemptTimeout = service.DefaultRequestTimeout + natstest.Within(0.3)
	// opDeadline bounds one operation with all its retries.
	opDeadline = natstest.Within(12)
	// faultProgressCap bounds how long a fault waits for load progress.
	faultProgressCap = natstest.Within(18)
)

// attempt is one reply to one send of a signed request.
type attempt struct {
	code   int    // 0 success, else the error code; -1 transport error
	reason string // reason token, or the transport error
	data   []byte
}

// tally counts a load's figures. Safe for concurrent use.
type tally struct {
	mu           sync.Mutex
	driven       int            // operations started
	acked        int            // ended in 200 or 208
	applied200   int            // ended in 200
	already208   int            // ended in 208: an earlier attempt had committed
	retries      int            // attempts beyond the first
	rejected     int            // ended in an error the operation may legitimately get (race test)
	retryable    map[string]int // retryable errors seen on attempts
	nonRetryable []string       // errors a client must not see
	reads        int
	readsOK      int
	readRetries  int

	// retryConflicts resends a mutation answered 409 conflict (a
	// concurrent change won, nothing was applied, the nonce is unclaimed:
	// the protocol says retry). The race test keeps conflicts final: there
	// they are the expected answer to a stale view.
	retryConflicts bool
}

func newTally() *tally { return &tally{retryable: map[string]int{}, retryConflicts: true} }

func (tl *tally) String() string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	var kinds []string
	for k, n := range tl.retryable {
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, n))
	}
	sort.Strings(kinds)
	return fmt.Sprintf("mutations driven=%d acknowledged=%d (200=%d, 208=%d) rejected=%d retries=%d retryable-errors[%s] non-retryable=%d; reads=%d ok=%d",
		tl.driven, tl.acked, tl.applied200, tl.already208, tl.rejected, tl.retries, strings.Join(kinds, " "), len(tl.nonRetryable), tl.reads, tl.readsOK)
}

// retryableAttempt says whether a reply leaves the request's fate open or
// says nothing was done: the client resends the same signed request.
func retryableAttempt(a attempt, conflicts bool) bool {
	return a.code == -1 || a.code == subjects.CodeUnavailable || a.code == subjects.CodeTooMany ||
		(conflicts && a.code == subjects.CodeConflict && a.reason == api.KindConflict.Reason())
}

// send delivers one signed request and resends the same bytes on every
// retryable outcome, until it gets an answer or opDeadline passes. Every
// attempt is recorded in tl (nil: not recorded).
func send(nc *nats.Conn, subject string, data []byte, tl *tally) (attempt, []attempt) {
	ctx, cancel := context.WithTimeout(context.Background(), opDeadline)
	defer cancel()
	var seen []attempt
	wait := 100 * time.Millisecond
	for {
		a := sendOnce(nc, subject, data, attemptTimeout)
		seen = append(seen, a)
		if !retryableAttempt(a, tl == nil || tl.retryConflicts) || ctx.Err() != nil {
			return a, seen
		}
		if tl != nil {
			tl.mu.Lock()
			tl.retryable[a.reason]++
			tl.retries++
			tl.mu.Unlock()
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// sendOnce makes one attempt.
func sendOnce(nc *nats.Conn, subject string, data []byte, timeout time.Duration) attempt {
	msg, err := nc.Request(subject, data, timeout)
	if err != nil {
		reason := "transport"
		switch {
		case errors.Is(err, nats.ErrTimeout):
			reason = "timeout"
		case errors.Is(err, nats.ErrNoResponders):
			reason = "no_responders"
		}
		return attempt{code: -1, reason: reason}
	}
	a := attempt{data: msg.Data}
	if c := msg.Header.Get(micro.ErrorCodeHeader); c != "" {
		a.code, _ = strconv.Atoi(c)
		a.reason = msg.Header.Get(subjects.HeaderReason)
	}
	return a
}

// signed signs body for op as kp with a fresh nonce, now.
func signed(t *testing.T, kp nkeys.KeyPair, op subjects.Op, body any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	env, err := envelope.New(kp, subjects.Subject(subjects.DefaultPrefix, op), b)
	if err != nil {
		t.Fatal(err)
	}
	data, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// mutate sends a signed mutation with retries and records its end in tl.
// allowed lists error codes that are a legitimate answer (race lost); any
// other error is recorded as non-retryable. It reports whether the
// mutation was acknowledged.
func mutate(nc *nats.Conn, op subjects.Op, data []byte, tl *tally, allowed ...int) (bool, attempt) {
	tl.mu.Lock()
	tl.driven++
	tl.mu.Unlock()
	final, _ := send(nc, subjects.Subject(subjects.DefaultPrefix, op), data, tl)
	tl.mu.Lock()
	defer tl.mu.Unlock()
	switch {
	case final.code == 0:
		tl.acked++
		tl.applied200++
		return true, final
	case final.code == subjects.CodeAlreadyApplied:
		tl.acked++
		tl.already208++
		return true, final
	case slices.Contains(allowed, final.code):
		tl.rejected++
	default:
		tl.nonRetryable = append(tl.nonRetryable, fmt.Sprintf("%s: %d %s", op, final.code, final.reason))
	}
	return false, final
}
