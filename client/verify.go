package client

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/envelope"
	"github.com/unibus/membership/service/api"
	"github.com/unibus/membership/subjects"
)

// ErrReplySignature reports that no reply carried a valid signature of the
// pinned service key ([WithServiceKey]): whoever answered is not the
// service, or the reply was altered on the way.
var ErrReplySignature = errors.New("client: reply not signed by the pinned service key")

// WithServiceKey pins the service's public key (N…, shown in the service's
// micro metadata as service_key and in membershipd's ready log). The client
// then accepts only replies signed by it over its own request's nonce, the
// status and the body hash; anything else — unsigned, signed by another
// key, or a signature recorded from another request — is refused. A key
// that is not an nkeys server public key makes every call fail with
// ErrReplySignature rather than silently not verifying.
func WithServiceKey(pub string) Option {
	return func(c *Client) {
		kp, err := nkeys.FromPublicKey(pub)
		if err != nil || !envelope.IsServerKey(pub) {
			c.serviceKey = invalidKey{}
			return
		}
		c.serviceKey = kp
	}
}

// RefusedReplies counts replies this client refused because their
// signature did not verify.
func (c *Client) RefusedReplies() int64 { return c.badReplies.Load() }

// invalidKey stands for a misconfigured pinned key: it verifies nothing.
type invalidKey struct{ nkeys.KeyPair }

func (invalidKey) Verify([]byte, []byte) error { return ErrReplySignature }

// roundTrip sends one request and returns its reply. With a pinned key it
// listens on its own inbox and takes the first reply that verifies: a rogue
// responder on the same subjects can then neither answer in the service's
// name nor, by answering first, stop the real reply from being used. If
// the attempt ends without one, the result is ErrReplySignature when
// something did answer, else the timeout.
func (c *Client) roundTrip(ctx context.Context, subject string, data []byte) (*nats.Msg, error) {
	if c.serviceKey == nil {
		return c.nc.RequestWithContext(ctx, subject, data)
	}
	inbox := c.nc.NewInbox()
	sub, err := c.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := c.nc.PublishRequest(subject, inbox, data); err != nil {
		return nil, err
	}
	refused := 0
	for {
		msg, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			if refused > 0 {
				return nil, fmt.Errorf("%w: %d replies refused", ErrReplySignature, refused)
			}
			return nil, err
		}
		if len(msg.Data) == 0 && msg.Header.Get("Status") == "503" {
			// The server's own no-responders status: nobody is
			// subscribed, so no reply will come.
			if refused > 0 {
				return nil, fmt.Errorf("%w: %d replies refused", ErrReplySignature, refused)
			}
			return nil, nats.ErrNoResponders
		}
		if VerifyReplyTo(c.serviceKey, data, msg) == nil {
			return msg, nil
		}
		refused++
		c.badReplies.Add(1)
	}
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
	if s := msg.Header.Get(subjects.HeaderErrorCode); s != "" {
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
