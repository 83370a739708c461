package client

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/envelope"
	"github.com/unibus/membership/internal/replymux"
	"github.com/unibus/membership/subjects"
)

// ErrReplySignature reports that no reply carried a valid signature of the
// pinned service key ([WithServiceKey]): whoever answered is not the
// service, or the reply was altered on the way.
var ErrReplySignature = errors.New("client: reply not signed by the pinned service key")

// WithServiceKey pins the service's public key (N…, shown in the service's
// micro metadata as service_key and in membershipd's ready log). The client
// then accepts only replies signed by it, or by a key it rotated to through
// a statement signed by it (rotation.go), bound to its own request;
// anything else — unsigned, signed by another key, or a signature recorded
// from another request — is refused. A key that is not an nkeys server
// public key makes every call fail with ErrReplySignature rather than
// silently not verifying.
func WithServiceKey(pub string) Option {
	return func(c *Client) { c.setPin(pub) }
}

// WithUnverifiedReplies turns reply verification off: the client then
// believes whoever answers on the service subjects. Replies are still
// decoded with the strict, bounded decoder. Use it only where no key can be
// pinned and the NATS account is trusted; memberctl says so on stderr.
func WithUnverifiedReplies() Option { return func(c *Client) { c.unverified = true } }

// WithPinned sets a function told when the client pins a key it was not
// given: on first use (old is empty) or through a verified rotation
// statement. memberctl stores the key beside the identity with it.
func WithPinned(f func(old, new string)) Option { return func(c *Client) { c.onPin = f } }

// ServiceKey is the key replies are verified against: the pinned one, the
// one learnt on first use, or "" before the first reply and when
// verification is off.
func (c *Client) ServiceKey() string {
	if p := c.pin.Load(); p != nil {
		return p.pub
	}
	return ""
}

// RefusedReplies counts replies this client refused because their
// signature did not verify.
func (c *Client) RefusedReplies() int64 { return c.badReplies.Load() }

// pinnedKey is a verified service key.
type pinnedKey struct {
	pub string
	kp  nkeys.KeyPair
}

func (c *Client) setPin(pub string) {
	kp, err := nkeys.FromPublicKey(pub)
	if err != nil || !envelope.IsServerKey(pub) {
		c.pin.Store(&pinnedKey{pub: pub, kp: invalidKey{}})
		return
	}
	c.pin.Store(&pinnedKey{pub: pub, kp: kp})
}

// invalidKey stands for a misconfigured pinned key: it verifies nothing.
type invalidKey struct{ nkeys.KeyPair }

func (invalidKey) Verify([]byte, []byte) error { return ErrReplySignature }

// KeyMismatchError reports replies signed by another key than the pinned
// one, with no valid rotation statement from the pinned key to it.
type KeyMismatchError struct {
	Pinned, Offered string
}

func (e *KeyMismatchError) Error() string {
	return fmt.Sprintf("client: replies are signed by service key %s, not by the pinned %s, and no rotation statement signed by %s names it", e.Offered, e.Pinned, e.Pinned)
}

// Is makes a KeyMismatchError match ErrReplySignature.
func (e *KeyMismatchError) Is(target error) bool { return target == ErrReplySignature }

// roundTrip sends one request and returns its reply. Unless verification
// is off it listens on a reply subject of its own (a token on the
// connection's one reply subscription, internal/replymux; a call cut by a
// lost connection ends with [ErrConnectionLost] and is resent, connloss.go)
// and takes the first reply that
// verifies (accept): a rogue responder on the same subjects can then
// neither answer in the service's name nor, by answering first, stop the
// real reply from being used. If the attempt ends without one, the result
// is ErrReplySignature (or a *KeyMismatchError) when something did answer,
// else the timeout.
func (c *Client) roundTrip(ctx context.Context, subject string, data []byte) (*nats.Msg, error) {
	if c.unverified {
		return c.nc.RequestWithContext(ctx, subject, data)
	}
	call, err := replymux.Of(c.nc).Open()
	if err != nil {
		return nil, err
	}
	defer call.Close()
	if err := c.nc.PublishRequest(subject, call.Subject(), data); err != nil {
		return nil, err
	}
	var refused error
	for {
		msg, err := call.Next(ctx)
		if err != nil {
			if refused != nil {
				return nil, refused
			}
			return nil, err
		}
		if len(msg.Data) == 0 && msg.Header.Get("Status") == "503" {
			// The server's own no-responders status: nobody is
			// subscribed, so no reply will come.
			if refused != nil {
				return nil, refused
			}
			return nil, nats.ErrNoResponders
		}
		if refused = c.accept(ctx, data, msg); refused == nil {
			return msg, nil
		}
		c.badReplies.Add(1)
	}
}

// accept verifies msg as the reply to request. With no key pinned yet the
// first reply that verifies under the key it names is trusted, and that
// key pinned (trust on first use). A reply under another key than the
// pinned one is accepted only through a rotation statement (rotation.go).
func (c *Client) accept(ctx context.Context, request []byte, msg *nats.Msg) error {
	offered := msg.Header.Get(subjects.HeaderServiceKey)
	p := c.pin.Load()
	if p != nil && VerifyReplyTo(p.kp, request, msg) == nil {
		return nil
	}
	kp, err := nkeys.FromPublicKey(offered)
	if err != nil || !envelope.IsServerKey(offered) || VerifyReplyTo(kp, request, msg) != nil {
		return fmt.Errorf("%w: reply not signed by the key it names", ErrReplySignature)
	}
	if p == nil {
		if c.pin.CompareAndSwap(nil, &pinnedKey{pub: offered, kp: kp}) && c.onPin != nil {
			c.onPin("", offered)
		}
		return c.accept(ctx, request, msg)
	}
	if err := c.rotateTo(ctx, p, offered); err != nil {
		return err
	}
	return nil
}

// VerifyReplyTo checks that msg is a reply signed by key to the request
// whose bytes were request: bound to the request's nonce, or, when the
// service could not read one, to the request's SHA-256 (docs/protocol.md
// §16). A reply bound to anything else is refused.
func VerifyReplyTo(key nkeys.KeyPair, request []byte, msg *nats.Msg) error {
	if nonce := envelope.RequestNonce(request); nonce != nil && VerifyReply(key, nonce, msg) == nil {
		return nil
	}
	return verifyReply(key, msg, func(code int, reason string) []byte {
		return api.ReplyToRequestCanonical(request, code, reason, msg.Data)
	})
}

// VerifyReply checks msg's reply signature by key for a request that
// carried nonce (docs/protocol.md §16).
func VerifyReply(key nkeys.KeyPair, nonce []byte, msg *nats.Msg) error {
	return verifyReply(key, msg, func(code int, reason string) []byte {
		return api.ReplyCanonical(nonce, code, reason, msg.Data)
	})
}

// verifyReply checks msg's signature by key over the bytes canonical makes
// of its code and reason.
func verifyReply(key nkeys.KeyPair, msg *nats.Msg, canonical func(code int, reason string) []byte) error {
	if msg.Header == nil {
		return fmt.Errorf("%w: unsigned", ErrReplySignature)
	}
	sig, err := base64.RawURLEncoding.DecodeString(msg.Header.Get(subjects.HeaderReplySig))
	if err != nil || len(sig) != envelope.SigSize {
		return fmt.Errorf("%w: missing or malformed signature", ErrReplySignature)
	}
	code := subjects.CodeOK
	reason := ""
	if s := msg.Header.Get(micro.ErrorCodeHeader); s != "" {
		if code, err = strconv.Atoi(s); err != nil {
			return fmt.Errorf("%w: error code %q", ErrReplySignature, s)
		}
		reason = msg.Header.Get(subjects.HeaderReason)
	}
	if err := key.Verify(canonical(code, reason), sig); err != nil {
		return fmt.Errorf("%w: bad signature", ErrReplySignature)
	}
	return nil
}
