// Package callout makes membershipd the source of NATS authorization for the
// bus it serves (docs/protocol.md, "The bus enforces membership").
//
// [Callout.Serve] answers NATS auth callout requests ($SYS.REQ.USER.AUTH) in a queue
// group: an endpoint connects with its identity's signing key (an nkeys user
// key, U…), the callout checks the server nonce's signature with that key,
// looks the identity up through a [Directory] and issues a user JWT that
// lets it publish and subscribe on the subjects of the rooms it is a live
// member of, send requests to the service, and receive replies on its own
// inbox prefix ([InboxPrefix]); everything else is denied.
//
// [Revoker] takes access away at once: it finds an endpoint's connections on
// every server of the cluster ($SYS.REQ.SERVER.PING.CONNZ, filtered by the
// connection's user name) and disconnects them ($SYS.REQ.SERVER.<id>.KICK).
// The client reconnects and receives the permissions of the moment.
//
// [Mode] rolls enforcement out: off (no callout), observe (admit everyone
// with the open bus's permissions, log and count what enforce would deny),
// enforce.
package callout
