package service_test

import (
	"strings"
	"testing"
	"time"

	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/store"
	"github.com/unibus/membership/subjects"
)

// TestStartRefusesShortNonceTTL: a store that keeps nonces for less than
// the skew window needs (service.NonceTTL) would let a captured request be
// replayed once its claim expired; Start refuses it and says why.
func TestStartRefusesShortNonceTTL(t *testing.T) {
	s := natstest.Server(t)
	nc := natstest.Connect(t, s)
	js := natstest.JetStream(t, nc)
	st, err := store.Open(natstest.Ctx(t, 1), js, store.Config{
		Bucket: subjects.DefaultBucket, KeysBucket: subjects.DefaultKeysBucket, MaxTTL: service.DefaultSkew,
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = service.Start(nc, st, service.Config{})
	if err == nil || !strings.Contains(err.Error(), "shorter than the "+service.NonceTTL(service.DefaultSkew).String()) {
		t.Fatalf("Start with a store keeping nonces %s: %v, want a refusal naming %s", st.MaxTTL(), err, service.NonceTTL(service.DefaultSkew))
	}
	if svc, err := service.Start(nc, st, service.Config{Skew: service.DefaultSkew / 2}); err != nil {
		t.Fatalf("Start with skew %s on a store keeping nonces %s: %v", service.DefaultSkew/2, st.MaxTTL(), err)
	} else {
		_ = svc.Stop()
	}
	if got := service.NonceTTL(time.Minute); got != 2*time.Minute {
		t.Fatalf("NonceTTL(1m) = %s, want 2m", got)
	}
}
