package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/subjects"
)

// usageError is a bad command line (exit 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// errUsageShown is a bad command line fisk reported already.
var errUsageShown = errors.New("usage error shown")

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// cmdError names the step that failed. A service error inside it exits 1
// unless local is set; everything else exits 3.
type cmdError struct {
	op    string
	err   error
	local bool
	hint  string // overrides the hint derived from the error
}

func (e *cmdError) Error() string { return e.op + ": " + e.err.Error() }
func (e *cmdError) Unwrap() error { return e.err }

// opErr attributes err to a service operation.
func opErr(op subjects.Op, err error) error {
	if err == nil {
		return nil
	}
	return &cmdError{op: string(op), err: err}
}

// localErr is a failure on this side: files, keys, the connection.
func localErr(what string, err error) error {
	return &cmdError{op: what, err: err, local: true}
}

// report prints err as one line on stderr, a hint where one helps, and
// returns the exit code.
func (a *app) report(err error) int {
	if err == nil {
		return exitOK
	}
	if errors.Is(err, errUsageShown) {
		return exitUsage
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(a.stderr, "memberctl: %s\nRun 'memberctl help' for usage.\n", ue.msg)
		return exitUsage
	}
	op, inner, local, hint := "", err, false, ""
	var ce *cmdError
	if errors.As(err, &ce) {
		op, inner, local, hint = ce.op, ce.err, ce.local, ce.hint
	}
	prefix := "memberctl: "
	if op != "" {
		prefix += op + ": "
	}
	var ae *api.Error
	if !local && errors.As(inner, &ae) {
		// Keep the client's context ("look up bob: …") in front of the
		// service's message.
		lead := ""
		if full, own := inner.Error(), ae.Error(); full != own && strings.HasSuffix(full, own) {
			lead = strings.TrimSuffix(full, own)
		}
		fmt.Fprintf(a.stderr, "%s%d %s: %s%s\n", prefix, ae.Kind.Code(), ae.Kind.Reason(), lead, ae.Message)
		if hint == "" {
			hint = serviceHint(subjects.Op(op), ae.Kind)
		}
		if hint != "" {
			fmt.Fprintf(a.stderr, "hint: %s\n", hint)
		}
		return exitService
	}
	fmt.Fprintf(a.stderr, "%s%v\n", prefix, inner)
	if hint == "" {
		hint = a.localHint(inner)
	}
	if hint != "" {
		fmt.Fprintf(a.stderr, "hint: %s\n", hint)
	}
	return exitLocal
}

// serviceHint suggests what to check for the common error kinds.
func serviceHint(op subjects.Op, k api.Kind) string {
	switch k {
	case api.KindUnauthenticated, api.KindReplay:
		return "check --identity (is its endpoint registered and enabled? ask an admin to run `memberctl identity get ENDPOINT`) and this machine's clock: requests are only accepted within the service's clock skew"
	case api.KindForbidden:
		switch op {
		case subjects.OpIdentityRegister, subjects.OpIdentityDisable, subjects.OpIdentityEnable, subjects.OpIdentityList:
			return "only an admin may manage or list identities"
		case subjects.OpRoomAdd, subjects.OpRoomRemove, subjects.OpRoomRekey, subjects.OpRoomDelete:
			return "only the room's owner may add, remove, rekey or delete"
		case subjects.OpRoomGet, subjects.OpRoomMembers, subjects.OpRoomKey:
			return "only current members may read a room, and each only the keys of epochs since it joined"
		case subjects.OpRoomLeave:
			return "only a member may leave a room"
		case subjects.OpRoomCreate:
			return "a room is created by its owner, who must seal its key with its own registered xkey"
		}
		return "the signer of --identity may not do this"
	case api.KindUnavailable:
		return "the service cannot reach its store right now; nothing was accepted, retry"
	case api.KindRateLimited:
		return "the service is busy; retry shortly"
	case api.KindNonceFloor:
		return "the service may have lost recent read nonces (a restart); retry"
	case api.KindConflict:
		return "a concurrent change won; retry"
	}
	return ""
}

// localHint suggests what to check for connection and file errors.
func (a *app) localHint(err error) string {
	if h := a.pinHint(err); h != "" {
		return h
	}
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return fmt.Sprintf("no membership service answers under prefix %s at %s; is membershipd running, with the same --prefix?", a.g.prefix, a.g.conn.Describe())
	case (errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded)) && a.inboxRefused():
		return "the NATS server refused this user a subscription to its reply inbox: connect with the --inbox-prefix the user may subscribe to (docs/deploy.md: _INBOX_client)"
	case errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return "the service did not answer within --timeout; retry or raise --timeout"
	case errors.Is(err, nats.ErrNoServers):
		return fmt.Sprintf("is a NATS server running at %s? set --server (NATS_URL), --context, or select a context with 'nats context select'", a.g.conn.Describe())
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked):
		return "the NATS server refused the connection: check --creds, --nkey, --user/--password or --token"
	}
	return ""
}
