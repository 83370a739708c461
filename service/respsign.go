package service

import (
	"encoding/base64"
	"fmt"

	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/envelope"
	"github.com/unibus/membership/subjects"
)

// checkServiceKey requires a private nkeys server key (N…). A dedicated key
// type keeps the service key from ever being confused with an identity's
// user key (U…): a reply signature can never pass as a request signature,
// and the domain labels separate them a second time.
func checkServiceKey(kp nkeys.KeyPair) error {
	pub, err := kp.PublicKey()
	if err != nil {
		return fmt.Errorf("service key: %w", err)
	}
	if !envelope.IsServerKey(pub) {
		return fmt.Errorf("service key must be an nkeys server key (N…)")
	}
	if _, err := kp.Seed(); err != nil {
		return fmt.Errorf("service key must hold its seed: %w", err)
	}
	return nil
}

// PublicKey is the service's public key (N…), which clients pin with
// client.WithServiceKey and which verifies reply and audit signatures.
func (s *Service) PublicKey() string { return s.pub }

// replyHeaders signs a reply and returns its signature headers merged into
// hdr. Every reply is signed, errors included, so a client that pins the
// key accepts nothing a rogue responder on the same subjects says.
func (s *Service) replyHeaders(c *call, code int, reason string, body []byte, hdr micro.Headers) micro.Headers {
	sig, err := s.signer.Sign(s.replyCanonical(c, code, reason, body))
	if err != nil {
		// Sending it unsigned is safe (clients that pin the key refuse
		// it) and keeps the service answering; the log says why.
		s.cfg.Logger.Error("sign reply", "op", c.op, "error", err)
		return hdr
	}
	if hdr == nil {
		hdr = micro.Headers{}
	}
	hdr[subjects.HeaderServiceKey] = []string{s.pub}
	hdr[subjects.HeaderReplySig] = []string{base64.RawURLEncoding.EncodeToString(sig)}
	return hdr
}

// replyCanonical binds a reply to its request (docs/protocol.md §16): to
// the nonce where one was read, even from a request refused later in step 1
// (bad version, sizes, ts), otherwise to SHA-256 of the request's bytes. A
// signed reply bound to nothing could be replayed against any request.
func (s *Service) replyCanonical(c *call, code int, reason string, body []byte) []byte {
	nonce := []byte(nil)
	switch {
	case c.env != nil:
		nonce = c.env.Nonce
	case len(c.raw) <= s.cfg.MaxRequest:
		// The request did not decode as a valid envelope: this re-reads
		// it on the error path only, with the same bounded decoder.
		nonce = envelope.RequestNonce(c.raw)
	}
	if nonce == nil {
		return api.ReplyToRequestCanonical(c.raw, code, reason, body)
	}
	return api.ReplyCanonical(nonce, code, reason, body)
}

// signRotation signs, with the previous key, the statement that hands over
// to the current one, for the micro info metadata. The previous seed is
// used once here and not kept.
func (s *Service) signRotation() error {
	prev := s.cfg.PreviousServiceKey
	if prev == nil {
		return nil
	}
	old, err := prev.PublicKey()
	if err != nil {
		return fmt.Errorf("previous service key: %w", err)
	}
	sig, err := prev.Sign(api.RotationCanonical(old, s.pub))
	if err != nil {
		return fmt.Errorf("previous service key: %w", err)
	}
	s.rotation = map[string]string{
		api.MetaPreviousKey: old,
		api.MetaRotationSig: base64.RawURLEncoding.EncodeToString(sig),
	}
	return nil
}

// initDefences sets up the service key, the replay cache and the rate
// limiter from the validated configuration.
func (s *Service) initDefences() error {
	s.key = s.cfg.ServiceKey
	if s.key == nil {
		kp, err := nkeys.CreateServer()
		if err != nil {
			return fmt.Errorf("generate service key: %w", err)
		}
		s.key = kp
		s.cfg.Logger.Warn("no service key configured: generated an ephemeral one; clients cannot pin it across restarts")
	}
	pub, err := s.key.PublicKey()
	if err != nil {
		return fmt.Errorf("service key: %w", err)
	}
	s.pub = pub
	if s.signer, err = envelope.NewKeySigner(s.key); err != nil {
		return fmt.Errorf("service key: %w", err)
	}
	if err := s.signRotation(); err != nil {
		return err
	}
	s.replays = newReplayCache(s.cfg.NonceTTL(), s.cfg.ReplayCache)
	if s.cfg.RateLimit > 0 {
		s.limiter = newRateLimiter(s.cfg.RateLimit, s.cfg.RateBurst)
	}
	return nil
}
