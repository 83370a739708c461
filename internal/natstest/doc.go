// Package natstest is the bottom layer of the test kit: real nats-servers
// with JetStream started in-process, the nats CLI, a proxy that holds
// replies, micro discovery, and the one timeout knob ([Patience]) every
// test's waits derive from. It depends on no package of this module, so
// any package's tests (the store's included) can use it without linking
// the service. Everything it starts is stopped through t.Cleanup.
//
// Membership fixtures (a running service, an admin, members, signed wire
// requests) sit one layer up, in internal/membertest.
package natstest
