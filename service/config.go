package service

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

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
}

// Defaults.
const (
	DefaultSkew           = 30 * time.Second
	DefaultMaxRequest     = 4 << 20
	DefaultRequestTimeout = 5 * time.Second
	DefaultVersion        = "1.0.0"
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
	var errs []error
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
	if c.MaxRequest < 1024 {
		errs = append(errs, fmt.Errorf("max request %d bytes: want at least 1024", c.MaxRequest))
	}
	return errors.Join(errs...)
}

// NonceTTL is how long a nonce key lives: a request stamped at now+skew
// stays acceptable until now+2×skew, so its nonce must outlive that.
func (c *Config) NonceTTL() time.Duration { return 2 * c.Skew }
