package service

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/subjects"
)

// AuthMode is the rollout switch for request authentication.
type AuthMode string

const (
	// AuthEnforce rejects every request that fails a check. The default.
	AuthEnforce AuthMode = "enforce"
	// AuthSoft runs every check, logs each failure with its reason and lets
	// the request through without a signer. Operations that need a signer
	// then refuse it.
	AuthSoft AuthMode = "soft"
	// AuthOff runs no check: no request has a signer.
	AuthOff AuthMode = "off"
)

// ParseAuthMode parses off, soft or enforce.
func ParseAuthMode(s string) (AuthMode, error) {
	switch m := AuthMode(s); m {
	case AuthEnforce, AuthSoft, AuthOff:
		return m, nil
	}
	return "", fmt.Errorf("auth mode %q: want off, soft or enforce", s)
}

// Config configures a Service. The zero value of each field means its
// default; call [Config.Validate] (done by [Start]).
type Config struct {
	Prefix         string        // subject prefix, default subjects.DefaultPrefix
	QueueGroup     string        // default subjects.DefaultQueue
	Skew           time.Duration // accepted clock skew, default 30s
	Auth           AuthMode      // default enforce
	MaxRequest     int           // largest accepted request, bytes; default 4 MiB
	RequestTimeout time.Duration // store work per request, default 5s
	Version        string        // service version shown by nats micro info
	Metadata       map[string]string
	Logger         *slog.Logger

	// RateLimit is each signer's sustained request rate per second, and
	// RateBurst how many it may send at once; default 100/s, burst 200. A
	// negative RateLimit disables the limit.
	RateLimit float64
	RateBurst int
	// ReplayCache bounds the local cache of recently claimed signer+nonce
	// pairs (default 65536 entries); negative disables it.
	ReplayCache int
	// ServiceKey signs every reply and every audit entry: an nkeys server
	// key pair (N…). Nil generates an ephemeral one at Start, which clients
	// cannot pin across restarts; daemons pass a stored key.
	ServiceKey nkeys.KeyPair
	// PreviousServiceKey, during a key rotation, is the key ServiceKey
	// replaces. The service signs with it, once at Start, the statement
	// that hands over to ServiceKey and publishes it in its micro info
	// (docs/protocol.md §16); pinned clients move only through it.
	PreviousServiceKey nkeys.KeyPair

	// Workers is how many micro instances the replica registers, each
	// running one request per endpoint at a time (workers.go); default 1.
	Workers int
	// IdentityMaxStale bounds how old the identity cache may be when it
	// answers: a disable or key change takes effect within it (cache.go).
	// Default 2s; negative disables the cache (every request reads the store).
	IdentityMaxStale time.Duration
	// RoomIndexWait is how long a page may wait for the room index to
	// catch up with the store before it is listed from the store instead
	// (roomindex.go). Default 100ms; negative disables the index.
	RoomIndexWait time.Duration
	// KeyCacheBytes bounds the cache of immutable sealed-key objects.
	// Default 32 MiB; negative disables it.
	KeyCacheBytes int
	// Revoke, if set, is told which endpoints a committed mutation took
	// access from, before the mutation is answered (bus.go, package callout).
	Revoke Revoker
}

// Defaults.
const (
	DefaultSkew           = 30 * time.Second
	DefaultMaxRequest     = 4 << 20
	DefaultRequestTimeout = 5 * time.Second
	DefaultVersion        = "1.0.0"
	DefaultRateLimit      = 100.0
	DefaultRateBurst      = 200
	DefaultReplayCache    = 65536

	DefaultIdentityMaxStale = 2 * time.Second
	DefaultRoomIndexWait    = 100 * time.Millisecond
	DefaultKeyCacheBytes    = 32 << 20
	MaxWorkers              = 256
)

// Validate fills in defaults and rejects settings that cannot work.
func (c *Config) Validate() error {
	if c.Prefix == "" {
		c.Prefix = subjects.DefaultPrefix
	}
	if c.QueueGroup == "" {
		c.QueueGroup = subjects.DefaultQueue
	}
	if c.Skew == 0 {
		c.Skew = DefaultSkew
	}
	if c.Auth == "" {
		c.Auth = AuthEnforce
	}
	if c.MaxRequest == 0 {
		c.MaxRequest = DefaultMaxRequest
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.Version == "" {
		c.Version = DefaultVersion
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Workers == 0 {
		c.Workers = 1
	}
	if c.IdentityMaxStale == 0 {
		c.IdentityMaxStale = DefaultIdentityMaxStale
	}
	if c.RoomIndexWait == 0 {
		c.RoomIndexWait = DefaultRoomIndexWait
	}
	if c.KeyCacheBytes == 0 {
		c.KeyCacheBytes = DefaultKeyCacheBytes
	}
	if c.RateLimit == 0 {
		c.RateLimit = DefaultRateLimit
	}
	if c.RateBurst == 0 {
		c.RateBurst = max(DefaultRateBurst, int(c.RateLimit))
	}
	if c.ReplayCache == 0 {
		c.ReplayCache = DefaultReplayCache
	}
	var errs []error
	if c.RateLimit > 0 && c.RateBurst < 1 {
		errs = append(errs, fmt.Errorf("rate burst %d: want at least 1", c.RateBurst))
	}
	if c.ServiceKey != nil {
		if err := checkServiceKey(c.ServiceKey); err != nil {
			errs = append(errs, err)
		}
	}
	if c.PreviousServiceKey != nil {
		if c.ServiceKey == nil {
			errs = append(errs, fmt.Errorf("previous service key: a rotation needs the new service key too"))
		} else if err := checkServiceKey(c.PreviousServiceKey); err != nil {
			errs = append(errs, fmt.Errorf("previous %w", err))
		}
	}
	if err := subjects.ValidatePrefix(c.Prefix); err != nil {
		errs = append(errs, err)
	}
	if err := subjects.ValidateSubject(c.QueueGroup); err != nil {
		errs = append(errs, fmt.Errorf("queue group: %w", err))
	}
	if c.Skew < time.Second || c.Skew > time.Hour {
		errs = append(errs, fmt.Errorf("skew %s: want 1s to 1h", c.Skew))
	}
	if _, err := ParseAuthMode(string(c.Auth)); err != nil {
		errs = append(errs, err)
	}
	if c.Workers < 1 || c.Workers > MaxWorkers {
		errs = append(errs, fmt.Errorf("workers %d: want 1 to %d", c.Workers, MaxWorkers))
	}
	if c.MaxRequest < 1024 {
		errs = append(errs, fmt.Errorf("max request %d bytes: want at least 1024", c.MaxRequest))
	}
	return errors.Join(errs...)
}

// NonceTTL is how long a claimed nonce must be kept for requests accepted
// within ±skew of the service clock: a request stamped at now+skew stays
// acceptable until now+2·skew, and its nonce must outlive that. It is the
// one definition of that lifetime; stores are opened with it
// ([store.Config.MaxTTL]) and [Start] refuses one opened with less.
func NonceTTL(skew time.Duration) time.Duration { return 2 * skew }

// NonceTTL is how long a nonce key lives: a request stamped at now+skew
// stays acceptable until now+2×skew, so its nonce must outlive that.
func (c *Config) NonceTTL() time.Duration { return NonceTTL(c.Skew) }
