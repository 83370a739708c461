package service

import (
	"fmt"
	"os"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"

	"github.com/unibus/membership/internal/buildinfo"
	"github.com/unibus/membership/subjects"
)

// Concurrency. micro runs each endpoint's handler one request at a time: an
// endpoint is one subscription, and a subscription's callbacks run in order.
// A handler that answered later from another goroutine would break the
// stats that `nats micro stats` shows (micro counts a request, its
// processing time and whether it failed when the handler returns). So a
// replica registers Config.Workers complete micro service instances on its
// connection instead, each a member of the queue group with its own
// endpoints: the server spreads requests over all of them, up to Workers
// requests of one operation run at once per process, and every instance
// still counts exactly the requests it answered. `nats micro ls` therefore
// lists Workers instances per process; their request and error counts add
// up to the process's. Each instance carries the metadata keys "worker"
// (its index) and "workers" (the count), and "host", "pid", "version" and
// "replica" name its replica. The custom stats data (rejections, nonce claims,
// commits, store latency) is process-wide: every instance reports it, so
// that any one answer shows it, and a sum over instances counts one
// instance per replica (docs/operations.md).

// addInstances registers the service's micro instances on nc. On error the
// instances already added are stopped.
func (s *Service) addInstances(nc *nats.Conn, meta map[string]string) error {
	ops, err := s.operations()
	if err != nil {
		return err
	}
	n := s.cfg.Workers
	for i := 0; i < n; i++ {
		m := make(map[string]string, len(meta)+2)
		for k, v := range meta {
			m[k] = v
		}
		m["worker"] = strconv.Itoa(i)
		m["workers"] = strconv.Itoa(n)
		cfg := micro.Config{
			Name:        subjects.ServiceName,
			Version:     s.cfg.Version,
			Description: "unibus membership: identities, rooms and sealed room keys",
			Metadata:    m,
			QueueGroup:  s.cfg.QueueGroup,
		}
		cfg.StatsHandler = s.stats.handler
		svc, err := micro.AddService(nc, cfg)
		if err != nil {
			s.stopInstances()
			return fmt.Errorf("add micro service: %w", err)
		}
		s.instances = append(s.instances, svc)
		for _, o := range ops {
			err := svc.AddEndpoint(o.Op.EndpointName(), s.handler(o.Op, o.read, o.mutate),
				micro.WithEndpointSubject(subjects.Subject(s.cfg.Prefix, o.Op)),
				micro.WithEndpointMetadata(map[string]string{
					"description": o.Description,
					"mutates":     strconv.FormatBool(o.Mutates),
					"request":     schema(o.Request),
					"response":    schema(o.Reply),
				}))
			if err != nil {
				s.stopInstances()
				return fmt.Errorf("add endpoint %s: %w", o.Op, err)
			}
		}
	}
	s.micro = s.instances[0]
	return nil
}

// stopInstances stops every instance, returning the first error.
func (s *Service) stopInstances() error {
	var first error
	for _, svc := range s.instances {
		if err := svc.Stop(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Instances returns the replica's micro service instances, one per worker
// ([Config.Workers]); [Service.Micro] is the first of them.
func (s *Service) Instances() []micro.Service { return append([]micro.Service(nil), s.instances...) }

// EndpointCounts sums micro's request and error counts of each endpoint over
// the replica's instances, by endpoint name.
func (s *Service) EndpointCounts() map[string][2]int {
	out := map[string][2]int{}
	for _, svc := range s.instances {
		for _, ep := range svc.Stats().Endpoints {
			c := out[ep.Name]
			c[0] += ep.NumRequests
			c[1] += ep.NumErrors
			out[ep.Name] = c
		}
	}
	return out
}

// processIdentity is the metadata that tells the replicas of a deployment
// apart: host, pid, the build's version, and "replica", an id drawn when the
// replica starts, shared by its worker instances (one process may run more
// than one replica, as the tests do).
func processIdentity() map[string]string {
	host, _ := os.Hostname()
	return map[string]string{"host": host, "pid": strconv.Itoa(os.Getpid()), "version": buildinfo.Version(), "replica": nuid.Next()}
}
