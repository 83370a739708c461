package service

import (
	"testing"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/subjects"
)

// TestEveryOperationHasARule: an operation the service serves without a
// rule would be refused (authorize answers 500), and one that reads a room
// must name a room rule for roomFor.
func TestEveryOperationHasARule(t *testing.T) {
	for _, o := range api.Ops {
		if ruleOf(o.Op) == 0 {
			t.Errorf("operation %s has no rule", o.Op)
		}
	}
	if r := ruleOf(subjects.Op("room.unknown")); r != 0 {
		t.Errorf("an unknown operation has rule %d, want none", r)
	}
	served, err := (&Service{}).operations()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range served {
		if ruleOf(o.Op) == 0 {
			t.Errorf("served operation %s has no rule", o.Op)
		}
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
