package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/unibus/membership/api"
)

// TestReplyError maps error headers to kinds: the reason token wins, the
// code is the fallback for a service that sends none.
func TestReplyError(t *testing.T) {
	tests := []struct {
		code, reason string
		want         error
	}{
		{"401", "replay", ErrReplay},
		{"401", "unauthenticated", ErrUnauthenticated},
		{"409", "exists", ErrExists},
		{"409", "conflict", ErrConflict},
		{"208", "already_applied", api.ErrAlreadyApplied},
		{"403", "", ErrForbidden},
		{"404", "", ErrNotFound},
		{"400", "", ErrInvalid},
		{"413", "", ErrTooLarge},
		{"429", "", ErrRateLimited},
		{"503", "", ErrUnavailable},
		{"500", "", ErrInternal},
		{"400", "bogus", ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.code+"/"+tt.reason, func(t *testing.T) {
			err := replyError(tt.code, "text", tt.reason)
			if !errors.Is(err, tt.want) {
				t.Fatalf("replyError(%s, %q) = %v, want %v", tt.code, tt.reason, err, tt.want)
			}
		})
	}
	if k := api.KindOf(replyError("999", "text", "")); k != api.KindOther {
		t.Fatalf("unknown code maps to %v", k)
	}
}

func TestRetryable(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nats.ErrTimeout, true},
		{nats.ErrNoResponders, true},
		{context.DeadlineExceeded, true},
		{fmt.Errorf("x: %w", api.E(api.KindUnavailable, "down")), true},
		{api.ErrConflict, true},
		{api.E(api.KindRateLimited, "slow down"), true},
		{api.ErrExists, false},
		{api.ErrReplay, false},
		{api.ErrInternal, false},
		{context.Canceled, false},
		{nats.ErrConnectionClosed, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.err), func(t *testing.T) {
			if got := retryable(tt.err); got != tt.want {
				t.Fatalf("retryable(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestDedupe(t *testing.T) {
	in := []string{"a", "b", "a", "c", "b"}
	if got := dedupe(in); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("dedupe = %v", got)
	}
	if !slices.Equal(in, []string{"a", "b", "a", "c", "b"}) {
		t.Fatalf("dedupe changed its input: %v", in)
	}
}
