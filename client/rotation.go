package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/envelope"
	"github.com/unibus/membership/subjects"
)

// rotationQuiet is how long the client keeps listening for further micro
// info answers once one came: each replica answers, and only those that
// run the new key carry the statement.
const rotationQuiet = 200 * time.Millisecond

// rotateTo moves the pin from p to offered if a replica publishes a
// rotation statement signed by p naming offered (docs/protocol.md §16).
// Without one the answer is a *KeyMismatchError naming both keys.
func (c *Client) rotateTo(ctx context.Context, p *pinnedKey, offered string) error {
	mismatch := &KeyMismatchError{Pinned: p.pub, Offered: offered}
	for _, meta := range c.serviceInfo(ctx) {
		if VerifyRotation(p.pub, meta) != nil || meta[api.MetaServiceKey] != offered {
			continue
		}
		kp, err := nkeys.FromPublicKey(offered)
		if err != nil {
			return mismatch
		}
		if c.pin.CompareAndSwap(p, &pinnedKey{pub: offered, kp: kp}) && c.onPin != nil {
			c.onPin(p.pub, offered)
		}
		return nil
	}
	return mismatch
}

// VerifyRotation checks the rotation statement in a replica's micro info
// metadata: previous_service_key is old, and key_rotation_sig is old's
// signature over [api.RotationCanonical](old, service_key).
func VerifyRotation(old string, meta map[string]string) error {
	newKey := meta[api.MetaServiceKey]
	if meta[api.MetaPreviousKey] != old || !envelope.IsServerKey(old) || !envelope.IsServerKey(newKey) {
		return ErrReplySignature
	}
	sig, err := base64.RawURLEncoding.DecodeString(meta[api.MetaRotationSig])
	if err != nil {
		return ErrReplySignature
	}
	kp, err := nkeys.FromPublicKey(old)
	if err != nil || kp.Verify(api.RotationCanonical(old, newKey), sig) != nil {
		return ErrReplySignature
	}
	return nil
}

// serviceInfo gathers the metadata of the replicas that answer a micro
// info request: it waits up to the client's timeout for the first, then
// while more come within rotationQuiet of each other.
func (c *Client) serviceInfo(ctx context.Context) []map[string]string {
	inbox := c.nc.NewInbox()
	sub, err := c.nc.SubscribeSync(inbox)
	if err != nil {
		return nil
	}
	defer func() { _ = sub.Unsubscribe() }()
	subject, err := micro.ControlSubject(micro.InfoVerb, subjects.ServiceName, "")
	if err != nil || c.nc.PublishRequest(subject, inbox, nil) != nil {
		return nil
	}
	var out []map[string]string
	for wait := c.timeout; ctx.Err() == nil; wait = rotationQuiet {
		msg, err := sub.NextMsg(wait)
		if err != nil {
			break
		}
		var info struct {
			Metadata map[string]string `json:"metadata"`
		}
		if json.Unmarshal(msg.Data, &info) == nil {
			out = append(out, info.Metadata)
		}
	}
	return out
}
