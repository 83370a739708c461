// Package replymux routes the replies of many requests on one NATS
// connection through one wildcard subscription (<inbox>.<token>), a token
// per call, and hands each call every reply sent to its token, in order.
//
// The client uses it for verified replies (the first reply that verifies
// wins, so every reply must reach the call); the store uses it for direct
// gets of several keys at once, which nats-server answers with several
// messages and an end-of-batch status on the one reply subject.
package replymux
