package client

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/envelope"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/subjects"
)

// Sentinels for errors.Is, one per error kind of the protocol.
var (
	ErrInvalid         = api.ErrInvalid
	ErrTooLarge        = api.ErrTooLarge
	ErrUnauthenticated = api.ErrUnauthenticated
	ErrReplay          = api.ErrReplay
	ErrForbidden       = api.ErrForbidden
	ErrNotFound        = api.ErrNotFound
	ErrExists          = api.ErrExists
	ErrConflict        = api.ErrConflict
	ErrUnavailable     = api.ErrUnavailable
	ErrInternal        = api.ErrInternal
	ErrRateLimited     = api.ErrRateLimited
	ErrNonceFloor      = api.ErrNonceFloor
)

// Client calls the membership service as one identity.
type Client struct {
	nc      *nats.Conn
	id      *identity.Identity
	signer  envelope.KeySigner // id.Sign with its Ed25519 key derived once
	prefix  string
	timeout time.Duration
	retries int
	backoff time.Duration

	progress func(stage string, done, total int)

	pin        atomic.Pointer[pinnedKey] // reply signer (verify.go); nil until learnt on first use
	unverified bool                      // WithUnverifiedReplies: replies are not verified
	onPin      func(old, new string)     // told when a key is pinned on first use or rotated to
	badReplies atomic.Int64              // replies refused by verification (verify.go)

	// floor is the service's read-nonce floor (Unix ms) last seen in a
	// nonce_floor refusal: reads are stamped no earlier than it.
	floor atomic.Int64
}

// Option configures a Client.
type Option func(*Client)

// WithPrefix sets the service's subject prefix (default subjects.DefaultPrefix).
func WithPrefix(p string) Option { return func(c *Client) { c.prefix = p } }

// WithTimeout sets how long one attempt waits for a reply (default 5s).
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithRetries sets how often a request is sent again after a timeout or a
// 503 (default 3). A mutation is resent as the same signed request.
func WithRetries(n int) Option { return func(c *Client) { c.retries = n } }

// WithBackoff sets the pause before the first retry; it doubles each time
// (default 100ms).
func WithBackoff(d time.Duration) Option { return func(c *Client) { c.backoff = d } }

// WithProgress sets a function told how far long operations have got
// (listing a large room's members, sealing a rekey's keys); total is 0 when
// unknown. memberctl uses it for a progress line on a terminal.
func WithProgress(f func(stage string, done, total int)) Option {
	return func(c *Client) { c.progress = f }
}

func (c *Client) report(stage string, done, total int) {
	if c.progress != nil {
		c.progress(stage, done, total)
	}
}

// New returns a client that signs as id over nc. It verifies every reply's
// signature: against the key given with [WithServiceKey], else against the
// key the first verified reply names, pinned from then on (trust on first
// use); [WithUnverifiedReplies] is the explicit opt-out.
func New(nc *nats.Conn, id *identity.Identity, opts ...Option) *Client {
	c := &Client{nc: nc, id: id, prefix: subjects.DefaultPrefix, timeout: 5 * time.Second, retries: 3, backoff: 100 * time.Millisecond}
	for _, o := range opts {
		o(c)
	}
	if id != nil {
		c.signer = id.Sign
		if ks, err := envelope.NewKeySigner(id.Sign); err == nil {
			c.signer = ks
		}
	}
	return c
}

// Identity is the identity the client signs as.
func (c *Client) Identity() *identity.Identity { return c.id }

// Call sends req to op and decodes the reply into resp. Most callers use the
// typed methods instead.
func (c *Client) Call(ctx context.Context, op subjects.Op, req, resp any) error {
	body, err := msgpack.Marshal(req)
	if err != nil {
		return err
	}
	subject := subjects.Subject(c.prefix, op)
	// Only a mutation is resent unchanged: a read claims its nonce on first
	// sight, so a resent read would be a replay (api.OpSpec.Mutates).
	mutates := api.Mutates(op)
	var data []byte
	if mutates {
		data, err = c.sign(subject, body)
		if err != nil {
			return err
		}
	}
	wait := c.backoff
	restamped := false
	for attempt := 0; ; attempt++ {
		if !mutates {
			if data, err = c.sign(subject, body); err != nil {
				return err
			}
		}
		reply, err := c.send(ctx, subject, data)
		if errors.Is(err, api.ErrNonceFloor) && !restamped {
			// The service may have lost read nonces and refuses reads
			// stamped before its floor; sign again at the floor (send
			// learnt it), once, outside the retry budget.
			restamped = true
			attempt--
			continue
		}
		if err == nil || errors.Is(err, api.ErrAlreadyApplied) {
			// Already applied: the first attempt committed, reply is
			// its original outcome.
			if resp == nil {
				return nil
			}
			return decodeReply(op, reply, resp)
		}
		if !retryable(err) || attempt >= c.retries {
			return err
		}
		if errors.Is(err, ErrConnectionLost) {
			continue // the reconnect was the wait: resend at once
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait *= 2
	}
}

// call makes op's call and returns its decoded reply: nil with the error
// when the call fails, never a zero or partly decoded value. The typed
// methods are made of it.
func call[T any](ctx context.Context, c *Client, op subjects.Op, req any) (*T, error) {
	var out T
	if err := c.Call(ctx, op, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ErrMalformedReply reports a reply body that is not the operation's reply
// type in the protocol's strict msgpack (docs/protocol.md §6): a length
// bomb, a wrong type, trailing bytes, a reply over [MaxReply]. It wraps
// envelope.ErrMalformed when the decoder refused it.
var ErrMalformedReply = errors.New("client: malformed reply")

// MaxReply bounds a reply body. The largest honest reply is a page of 500
// audit entries or members, a few hundred kilobytes; NATS max_payload (1 MiB
// by default, 8 MiB on the embedded server) bounds it again.
const MaxReply = 8 << 20

// decodeReply decodes a reply body with the same strict, bounded decoder
// the service uses for requests, whoever sent it and before any use:
// anyone who can answer on the service subjects can send bytes here, and a
// pinned key does not change what the decoder must survive.
func decodeReply(op subjects.Op, reply []byte, resp any) error {
	if len(reply) > MaxReply {
		return fmt.Errorf("%w: %s reply of %d bytes is larger than %d", ErrMalformedReply, op, len(reply), MaxReply)
	}
	if err := envelope.Unmarshal(reply, resp); err != nil {
		return fmt.Errorf("%w: %s reply: %w", ErrMalformedReply, op, err)
	}
	return nil
}

func (c *Client) sign(subject string, body []byte) ([]byte, error) {
	nonce := make([]byte, envelope.NonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	ts := time.Now()
	if f := c.floor.Load(); f > ts.UnixMilli() {
		ts = time.UnixMilli(f)
	}
	env, err := envelope.Sign(c.signer, subject, ts, nonce, body)
	if err != nil {
		return nil, err
	}
	return env.Marshal()
}

// retryable errors leave the request's fate open or say nothing was done.
// 409 conflict (a concurrent change won the compare-and-set) and 429 claim
// no nonce, so the same signed request may be sent again.
func retryable(err error) bool {
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrConnectionLost) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, api.ErrUnavailable) ||
		errors.Is(err, api.ErrConflict) || errors.Is(err, api.ErrRateLimited)
}

// send makes one attempt and turns error headers into *api.Error.
func (c *Client) send(ctx context.Context, subject string, data []byte) ([]byte, error) {
	actx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	lctx, stop := c.failOnDisconnect(actx)
	defer stop()
	msg, err := c.roundTrip(lctx, subject, data) // verifies the reply's signature when a service key is pinned (verify.go)
	switch {
	case err != nil && errors.Is(context.Cause(lctx), ErrConnectionLost):
		err = ErrConnectionLost
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		err = nats.ErrTimeout
	}
	if err != nil {
		return nil, err
	}
	code := msg.Header.Get(micro.ErrorCodeHeader)
	if code == "" {
		return msg.Data, nil
	}
	err = replyError(code, msg.Header.Get(micro.ErrorHeader), msg.Header.Get(subjects.HeaderReason))
	if errors.Is(err, api.ErrNonceFloor) {
		c.raiseFloor(msg.Header.Get(subjects.HeaderNonceFloor))
	}
	return msg.Data, err
}

// maxFloorAhead bounds how far ahead of this clock a floor is believed: the
// header is not covered by the reply signature, and the service's skew is
// at most an hour (service.Config), so no honest floor lies further ahead.
const maxFloorAhead = time.Hour

// raiseFloor records a nonce floor from a refusal's header.
func (c *Client) raiseFloor(h string) {
	ms, err := strconv.ParseInt(h, 10, 64)
	if err != nil || ms > time.Now().Add(maxFloorAhead).UnixMilli() {
		return
	}
	for {
		cur := c.floor.Load()
		if ms <= cur || c.floor.CompareAndSwap(cur, ms) {
			return
		}
	}
}

func replyError(code, text, reason string) error {
	kind := api.KindFromReason(reason)
	if kind == api.KindOther {
		n, _ := strconv.Atoi(code)
		for k := api.KindInvalid; k <= api.KindLast; k++ {
			if k.Code() == n {
				kind = k
				break
			}
		}
	}
	return &api.Error{Kind: kind, Message: text}
}
