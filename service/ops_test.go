package service_test

import (
	"strconv"
	"testing"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/subjects"
)

// TestEndpointsFollowOpTable: the endpoints that `nats micro info` shows are
// the rows of api.Ops, in order, each with the table's subject, `mutates` and
// description (docs/operations.md, "Endpoint metadata").
func TestEndpointsFollowOpTable(t *testing.T) {
	e := newEnv(t, service.Config{})
	eps := e.svc.Micro().Info().Endpoints
	if len(eps) != len(api.Ops) {
		t.Fatalf("%d endpoints, want %d", len(eps), len(api.Ops))
	}
	for i, o := range api.Ops {
		ep := eps[i]
		if ep.Name != o.Op.EndpointName() || ep.Subject != subjects.Subject(subjects.DefaultPrefix, o.Op) {
			t.Errorf("endpoint %d is %s on %s, want %s", i, ep.Name, ep.Subject, o.Op)
		}
		if got := ep.Metadata["mutates"]; got != strconv.FormatBool(o.Mutates) {
			t.Errorf("%s: mutates = %q, want %t", o.Op, got, o.Mutates)
		}
		if got := ep.Metadata["description"]; got != o.Description {
			t.Errorf("%s: description = %q, want %q", o.Op, got, o.Description)
		}
	}
}
