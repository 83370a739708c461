package client

import (
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/subjects"
)

// BusOptions are the NATS connection options of identity id on a bus that
// enforces membership (docs/protocol.md, "The bus enforces membership"): it
// authenticates with its identity's signing key (nkey), and its replies
// arrive under its own inbox prefix, the only one it may subscribe to.
func BusOptions(id *identity.Identity) []nats.Option {
	pub, _ := id.Sign.PublicKey()
	return []nats.Option{
		nats.Nkey(pub, id.Sign.Sign),
		nats.CustomInboxPrefix(subjects.BusInboxPrefix(id.Endpoint)),
		// Longer than the server's wait for the callout (5 s embedded),
		// so that a client in a connection storm hears its answer rather
		// than giving up at nats.go's 2 s.
		nats.Timeout(BusConnectTimeout),
	}
}

// BusConnectTimeout is how long a bus connection waits for the server's
// answer, the callout's included.
const BusConnectTimeout = 10 * time.Second
