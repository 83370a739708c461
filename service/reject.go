package service

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/subjects"
)

// rejection is a refused request as a step of the pipeline returns it: the
// protocol error the caller sees, with what the reply carries besides it.
// The outcome travels up in the error, so that respond is the one place
// that turns it into a reply, headers and stats.
type rejection struct {
	err        *api.Error
	reason     string        // finer reason for the stats; empty: the kind's
	floor      time.Time     // nonce_floor: the earliest ts accepted (HeaderNonceFloor)
	retryAfter time.Duration // rate_limited: when the signer may send again (HeaderRetryAfter)
	reply      []byte        // already_applied: this very mutation's original reply
}

var _ error = (*rejection)(nil)

func (r *rejection) Error() string { return r.err.Error() }

// Unwrap exposes the protocol error: api.KindOf and errors.Is see the kind.
func (r *rejection) Unwrap() error { return r.err }

// refuse is a rejection of kind k counted in the stats under reason.
func refuse(reason string, k api.Kind, format string, args ...any) *rejection {
	return &rejection{err: api.E(k, format, args...), reason: reason}
}

// errReplay refuses a nonce that another request claimed.
func errReplay() *rejection {
	return refuse(reasonReplay, api.KindReplay, "nonce already used")
}

// errApplied answers a copy of a committed mutation with its original reply.
func errApplied(reply []byte) *rejection {
	return &rejection{err: api.E(api.KindAlreadyApplied, "request already applied"), reply: reply}
}

// rejectionOf classifies err: an unclassified error is logged and answered
// as internal.
func (s *Service) rejectionOf(c *call, err error) *rejection {
	var r *rejection
	if errors.As(err, &r) {
		return r
	}
	var ae *api.Error
	if !errors.As(err, &ae) {
		ae = s.internal(c, "unclassified", err).(*api.Error)
	}
	return &rejection{err: ae}
}

// reasonOf is the reason err is counted under: a rejection's own, else its
// kind's.
func reasonOf(err error) string {
	var r *rejection
	if errors.As(err, &r) {
		return r.statsReason()
	}
	return api.KindOf(err).Reason()
}

// statsReason is the reason r is counted under.
func (r *rejection) statsReason() string {
	if r.reason != "" {
		return r.reason
	}
	return r.err.Kind.Reason()
}

// storeErr logs a store failure and answers a fixed text: the store could
// not be used, so nothing was accepted (fail closed, H12).
func (s *Service) storeErr(c *call, what string, err error) error {
	s.cfg.Logger.Error("store unavailable", "op", c.op, "step", what, "error", err)
	return &api.Error{Kind: api.KindUnavailable, Message: genericUnavailable}
}

// internal logs an unexpected failure and answers a fixed text.
func (s *Service) internal(c *call, what string, err error) error {
	s.cfg.Logger.Error("internal error", "op", c.op, "step", what, "error", err)
	return &api.Error{Kind: api.KindInternal, Message: genericInternal}
}

// The only texts a 5xx ever carries.
const (
	genericUnavailable = "service unavailable; retry (a mutation: resend the same signed request)"
	genericInternal    = "internal error"
)

// respond sends the reply or the error headers, and logs the outcome.
func (s *Service) respond(req micro.Request, c *call, reply []byte, err error, start time.Time) {
	attrs := []any{"op", c.op, "duration", time.Since(start)}
	if c.signer != nil {
		attrs = append(attrs, "signer", c.signer.Endpoint)
	}
	if err == nil {
		hdr := s.replyHeaders(c, subjects.CodeOK, "", reply, nil)
		if rerr := req.Respond(reply, micro.WithHeaders(hdr)); rerr != nil {
			s.cfg.Logger.Warn("respond", append(attrs, "error", rerr)...)
		}
		s.cfg.Logger.Debug("request", append(attrs, "outcome", "ok")...)
		return
	}
	r := s.rejectionOf(c, err)
	kind := r.err.Kind
	if kind == api.KindAlreadyApplied {
		s.stats.of(c.op).add(func(e *endpointStats) { e.alreadyApplied++ })
	} else {
		s.stats.of(c.op).reject(r.statsReason())
	}
	hdr := micro.Headers{subjects.HeaderReason: []string{kind.Reason()}}
	if r.retryAfter > 0 {
		hdr[subjects.HeaderRetryAfter] = []string{strconv.FormatInt(r.retryAfter.Milliseconds(), 10)}
	}
	if !r.floor.IsZero() {
		hdr[subjects.HeaderNonceFloor] = []string{strconv.FormatInt(r.floor.UnixMilli(), 10)}
	}
	hdr = s.replyHeaders(c, kind.Code(), kind.Reason(), r.reply, hdr)
	if rerr := req.Error(strconv.Itoa(kind.Code()), r.err.Message, r.reply, micro.WithHeaders(hdr)); rerr != nil {
		s.cfg.Logger.Warn("respond", append(attrs, "error", rerr)...)
	}
	level := slog.LevelInfo
	if kind == api.KindAlreadyApplied {
		level = slog.LevelDebug
	}
	s.cfg.Logger.Log(context.Background(), level, "request rejected",
		append(attrs, "code", kind.Code(), "reason", r.statsReason(), "message", r.err.Message)...)
}
