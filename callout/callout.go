package callout

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/service"
)

// Mode is the rollout switch for bus enforcement.
type Mode string

const (
	// Off runs no callout: the bus is as open as its server config.
	Off Mode = "off"
	// Observe admits every connection with unrestricted permissions, as the
	// open bus does, and logs and counts each connection and subscription
	// that Enforce would deny.
	Observe Mode = "observe"
	// Enforce admits only active identities, with their rooms' subjects.
	Enforce Mode = "enforce"
)

// ParseMode parses off, observe or enforce.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case Off, Observe, Enforce:
		return m, nil
	}
	return "", fmt.Errorf("bus mode %q: want off, observe or enforce", s)
}

// Wire constants of the callout.
const (
	// Subject is where nats-server sends authorization requests.
	Subject = "$SYS.REQ.USER.AUTH"
	// DefaultQueue is the queue group the replicas answer in.
	DefaultQueue = "membership-callout"
	// ServiceName is the micro service the callout registers (nats micro
	// stats shows its counters).
	ServiceName = "membership-callout"
	// xkeyHeader carries the server's curve key on an encrypted request.
	xkeyHeader = "Nats-Server-Xkey"
	// requestAudience is the audience of every authorization request.
	requestAudience = "nats-authorization-request"
	// UserPrefix starts the user name of every connection the callout
	// admits, followed by the endpoint id. The colon cannot occur in an
	// endpoint id, so a static user of the server config is never taken for
	// an endpoint (and never kicked by a revocation).
	UserPrefix = "endpoint:"
)

// Directory is where the callout looks identities up: the service
// ([service.Service.BusGrant]).
type Directory interface {
	BusGrant(ctx context.Context, signKey string) (*service.BusGrant, error)
	BusGrantByEndpoint(ctx context.Context, endpoint string) (*service.BusGrant, error)
}

var _ Directory = (*service.Service)(nil)

// Config configures the callout.
type Config struct {
	Mode Mode
	// Issuer signs the responses and the user JWTs: an account key pair
	// (A…), whose public key is auth_callout.issuer in the server config.
	Issuer nkeys.KeyPair
	// XKey, if set, is the curve key pair (X…) whose public key is
	// auth_callout.xkey: requests and responses are then encrypted.
	XKey nkeys.KeyPair
	// Account is the account admitted endpoints are placed in (the user
	// JWT's audience), e.g. MEMBERSHIP; "$G" without accounts.
	Account string
	// Prefix is the service's subject prefix: endpoints may send requests
	// under it.
	Prefix  string
	Queue   string        // default DefaultQueue
	Timeout time.Duration // of a lookup, a revocation, a server count; default 2s
	// ObserveEvery is how often observe mode lists the subscriptions
	// (Revoker.Observe); default 5s.
	ObserveEvery time.Duration
	// Workers bounds the answers computed at once (each waits on store
	// reads); a request beyond them waits for a free worker, and the
	// server refuses the connection if that outlasts its authorization
	// timeout. Default 32.
	Workers int
	Logger  *slog.Logger
}

func (c *Config) validate() error {
	if c.Queue == "" {
		c.Queue = DefaultQueue
	}
	if c.Timeout == 0 {
		c.Timeout = 2 * time.Second
	}
	if c.Workers == 0 {
		c.Workers = 32
	}
	if c.ObserveEvery == 0 {
		c.ObserveEvery = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	var errs []error
	if _, err := ParseMode(string(c.Mode)); err != nil || c.Mode == Off {
		errs = append(errs, fmt.Errorf("callout mode %q: want observe or enforce", c.Mode))
	}
	if c.Issuer == nil {
		errs = append(errs, errors.New("callout issuer: an account key (SA…) is required"))
	} else if pub, err := c.Issuer.PublicKey(); err != nil || !nkeys.IsValidPublicAccountKey(pub) {
		errs = append(errs, errors.New("callout issuer: want an account key (SA…)"))
	}
	if c.XKey != nil {
		if pub, err := c.XKey.PublicKey(); err != nil || !nkeys.IsValidPublicCurveKey(pub) {
			errs = append(errs, errors.New("callout xkey: want a curve key (SX…)"))
		}
	}
	if c.Account == "" {
		errs = append(errs, errors.New("callout account is required"))
	}
	if c.Prefix == "" {
		errs = append(errs, errors.New("callout: the service prefix is required"))
	}
	return errors.Join(errs...)
}

// Callout answers authorization requests.
type Callout struct {
	cfg     Config
	dir     Directory
	micro   micro.Service
	stats   *counters
	workers chan struct{} // one token per answer being computed
	nc      *nats.Conn
}

// New checks cfg. Serve starts answering; NewRevoker makes the revoker that
// shares its counters.
func New(cfg Config) (*Callout, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	issuer, err := newIssuerKey(cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("callout issuer: %w", err)
	}
	cfg.Issuer = issuer
	return &Callout{cfg: cfg, stats: &counters{}, workers: make(chan struct{}, cfg.Workers)}, nil
}

// Serve registers the callout on nc, which must be an auth_users entry of
// the server's auth_callout block (it is not itself subject to the
// callout), looking identities up in dir. Stop it with [Callout.Stop].
func (c *Callout) Serve(nc *nats.Conn, dir Directory) error {
	c.dir, c.nc = dir, nc
	cfg := c.cfg
	svc, err := micro.AddService(nc, micro.Config{
		Name:         ServiceName,
		Version:      "1.0.0",
		Description:  "NATS auth callout: bus permissions from room membership (" + string(cfg.Mode) + ")",
		QueueGroup:   cfg.Queue,
		Metadata:     map[string]string{"mode": string(cfg.Mode), "account": cfg.Account},
		StatsHandler: func(*micro.Endpoint) any { return c.stats.snapshot() },
	})
	if err != nil {
		return err
	}
	if err := svc.AddEndpoint("auth", micro.HandlerFunc(c.dispatch), micro.WithEndpointSubject(Subject)); err != nil {
		_ = svc.Stop()
		return err
	}
	c.micro = svc
	return nil
}

// Stop drains the callout's subscription. Once it returns the server
// sends this replica no more requests (the unsubscription is flushed);
// answers being computed are still sent.
func (c *Callout) Stop() error {
	if c.micro == nil {
		return nil
	}
	err := c.micro.Stop()
	if ferr := c.nc.Flush(); ferr != nil && !errors.Is(ferr, nats.ErrConnectionClosed) {
		err = errors.Join(err, ferr)
	}
	return err
}

// Mode is the callout's mode.
func (c *Callout) Mode() Mode { return c.cfg.Mode }

// Stats is a snapshot of the counters shown by nats micro stats.
func (c *Callout) Stats() Counts { return c.stats.snapshot() }

// dispatch hands a request to a worker: micro delivers an endpoint's
// requests one at a time, and a connection storm would otherwise queue
// behind each answer's store reads.
func (c *Callout) dispatch(req micro.Request) {
	c.workers <- struct{}{}
	go func() {
		defer func() { <-c.workers }()
		c.handle(req)
	}()
}

// handle answers one request. Every answer is a signed response: a refusal
// carries an error text the server logs, never a store detail.
func (c *Callout) handle(req micro.Request) {
	start := time.Now()
	serverXKey := req.Headers().Get(xkeyHeader)
	ar, err := c.decode(req.Data(), serverXKey)
	if err != nil {
		// Without a decodable request there is no user key to answer for:
		// the server times the connection out (refused).
		c.stats.add(func(n *Counts) { n.Malformed++ })
		c.cfg.Logger.Warn("bus callout: undecodable request", "error", err)
		return
	}
	userJWT, refusal := c.authorize(ar)
	resp := jwt.NewAuthorizationResponseClaims(ar.UserNkey)
	resp.Audience = ar.Server.ID
	resp.Jwt, resp.Error = userJWT, refusal
	tok, err := resp.Encode(c.cfg.Issuer)
	if err != nil {
		c.cfg.Logger.Error("bus callout: encode response", "error", err)
		return
	}
	out := []byte(tok)
	if c.cfg.XKey != nil && serverXKey != "" {
		if out, err = c.cfg.XKey.Seal(out, serverXKey); err != nil {
			c.cfg.Logger.Error("bus callout: seal response", "error", err)
			return
		}
	}
	c.stats.latency(time.Since(start))
	_ = req.Respond(out)
}

// decode opens (if encrypted) and checks an authorization request.
func (c *Callout) decode(data []byte, serverXKey string) (*jwt.AuthorizationRequestClaims, error) {
	if c.cfg.XKey != nil {
		// An encrypted callout must not accept a request in clear: anyone
		// able to publish on the subject could otherwise forge one.
		if serverXKey == "" {
			return nil, errors.New("request not encrypted although an xkey is configured")
		}
		var err error
		if data, err = c.cfg.XKey.Open(data, serverXKey); err != nil {
			return nil, fmt.Errorf("open: %w", err)
		}
	}
	ar, err := jwt.DecodeAuthorizationRequestClaims(string(data))
	if err != nil {
		return nil, err
	}
	vr := jwt.CreateValidationResults()
	ar.Validate(vr)
	switch {
	case len(vr.Errors()) > 0:
		return nil, vr.Errors()[0]
	case ar.Audience != requestAudience:
		return nil, fmt.Errorf("audience %q", ar.Audience)
	case !nkeys.IsValidPublicServerKey(ar.Issuer):
		return nil, errors.New("issuer is not a server key")
	case ar.Server.ID == "":
		return nil, errors.New("no server id")
	}
	return ar, nil
}

// authorize decides; it returns the user JWT or a refusal text.
func (c *Callout) authorize(ar *jwt.AuthorizationRequestClaims) (userJWT, refusal string) {
	key := ar.ConnectOptions.Nkey
	log := c.cfg.Logger.With("client", ar.ClientInformation.Host, "cid", ar.ClientInformation.ID,
		"server", ar.Server.Name, "sign_key", key)
	grant, reason := c.lookup(ar)
	if reason != "" {
		if c.cfg.Mode == Observe {
			c.stats.add(func(n *Counts) { n.WouldDenyConnect++; n.Admitted++ })
			log.Warn("bus observe: connection enforce would refuse", "reason", reason)
			return c.userJWT(ar, "", nil)
		}
		c.stats.add(func(n *Counts) { n.Refused++ })
		log.Info("bus: connection refused", "reason", reason)
		return "", reason
	}
	c.stats.add(func(n *Counts) { n.Admitted++ })
	if c.cfg.Mode == Observe {
		return c.userJWT(ar, grant.Endpoint, nil)
	}
	return c.userJWT(ar, grant.Endpoint, Permissions(c.cfg.Prefix, grant.Endpoint, grant.Subjects, log))
}

// lookup proves possession of the key and finds its identity; reason says
// why enforce refuses it. The texts are the service's own words: the server
// logs them and nats-server sends "Authorization Violation" to the client.
func (c *Callout) lookup(ar *jwt.AuthorizationRequestClaims) (*service.BusGrant, string) {
	key := ar.ConnectOptions.Nkey
	if key == "" {
		return nil, "no nkey: connect with the identity's signing key"
	}
	if !nkeys.IsValidPublicUserKey(key) {
		return nil, "nkey is not a user key (U…)"
	}
	if !signedNonce(key, ar.ClientInformation.Nonce, ar.ConnectOptions.SignedNonce) {
		return nil, "nonce signature does not verify with the nkey"
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
	defer cancel()
	g, err := c.dir.BusGrant(ctx, key)
	switch {
	case err != nil:
		// Fail closed: an unreachable store admits no one.
		c.cfg.Logger.Error("bus callout: identity lookup", "error", err)
		return nil, "membership service unavailable"
	case g == nil:
		return nil, "unknown identity"
	case g.Disabled:
		return nil, "identity " + g.Endpoint + " is disabled"
	}
	return g, ""
}

// signedNonce checks the client's signature of the server's nonce: it proves
// possession of the signing key (the server does not check it for a user it
// does not know; the callout must).
func signedNonce(key, nonce, sig string) bool {
	if nonce == "" || sig == "" {
		return false
	}
	raw, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		if raw, err = base64.StdEncoding.DecodeString(sig); err != nil {
			return false
		}
	}
	kp, err := nkeys.FromPublicKey(key)
	return err == nil && kp.Verify([]byte(nonce), raw) == nil
}

// userJWT issues the user JWT placing the connection in the account, named
// after its endpoint (so that a revocation can find it), with perms (nil:
// unrestricted, as on the open bus).
func (c *Callout) userJWT(ar *jwt.AuthorizationRequestClaims, endpoint string, perms *jwt.Permissions) (string, string) {
	uc := jwt.NewUserClaims(ar.UserNkey)
	uc.Audience = c.cfg.Account
	if endpoint != "" {
		uc.Name = UserPrefix + endpoint
	}
	if perms != nil {
		uc.Permissions = *perms
	}
	tok, err := uc.Encode(c.cfg.Issuer)
	if err != nil {
		c.cfg.Logger.Error("bus callout: encode user", "error", err)
		return "", "membership service error"
	}
	return tok, ""
}

// validRoomSubject reports whether a room's subject may be granted: never one
// under the service prefix, an inbox or a system subject, whatever the room
// record says.
func validRoomSubject(prefix, subject string) bool {
	return subject != "" && !strings.HasPrefix(subject, "$") && !strings.HasPrefix(subject, "_INBOX") &&
		subject != prefix && !strings.HasPrefix(subject, prefix+".")
}
