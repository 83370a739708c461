package callout

import (
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go/micro"

	"github.com/unibus/membership/subjects"
)

// Responses bounds the replies an endpoint may publish to requests it
// received on a room subject: one per request, within a minute.
var Responses = jwt.ResponsePermission{MaxMsgs: 1, Expires: time.Minute}

// Permissions is what an endpoint may do on the bus (docs/protocol.md):
//   - publish and subscribe: each room subject and its children (s, s.>);
//   - publish: the service's operations (prefix.>) and micro discovery
//     ($SRV.>);
//   - subscribe: its own inbox prefix;
//   - reply once to a request it received.
//
// Everything else is denied: with an allow list, nats-server denies what it
// does not name. A room subject that could reach the service, an inbox or a
// system subject is never granted (logged).
func Permissions(prefix, endpoint string, rooms []string, log *slog.Logger) *jwt.Permissions {
	p := &jwt.Permissions{Resp: &jwt.ResponsePermission{MaxMsgs: Responses.MaxMsgs, Expires: Responses.Expires}}
	// Built as plain slices, sorted and compacted once: jwt.StringList.Add
	// looks for each subject in the list first, quadratic in the rooms
	// (~3% of a connection's CPU with 100 rooms).
	rs := make([]string, 0, 2*len(rooms))
	for _, s := range rooms {
		if !validRoomSubject(prefix, s) {
			log.Warn("bus: room subject not granted", "endpoint", endpoint, "subject", s)
			continue
		}
		rs = append(rs, s, s+".>")
	}
	slices.Sort(rs)
	rs = slices.Compact(rs)
	p.Pub.Allow = append(slices.Clip(rs), prefix+".>", micro.APIPrefix+".>")
	p.Sub.Allow = append(slices.Clone(rs), subjects.BusInboxPrefix(endpoint)+".>")
	return p
}
