package service

import (
	"testing"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/subjects"
)

// TestEveryOperationHasARule: an operation of the protocol's table that the
// service served without a rule would be refused (authorize answers 500).
func TestEveryOperationHasARule(t *testing.T) {
	for _, spec := range api.Ops {
		if ruleOf(spec.Op) == 0 {
			t.Errorf("operation %s has no rule", spec.Op)
		}
	}
	if r := ruleOf(subjects.Op("room.unknown")); r != 0 {
		t.Errorf("an unknown operation has rule %d, want none", r)
	}
}

// TestAuthorizeRefusesAnOperationWithoutRule: a new operation is closed
// until it is given a rule.
func TestAuthorizeRefusesAnOperationWithoutRule(t *testing.T) {
	s := &Service{cfg: Config{}}
	if err := s.cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	err := s.authorize(&call{op: subjects.Op("room.unknown")})
	if k := api.KindOf(err); k != api.KindInternal {
		t.Fatalf("authorize of an operation without rule: %v (kind %s), want internal", err, k)
	}
}
