// Package e2e holds black-box tests of the membership service against real
// in-process nats-servers: through the Go client, the raw wire, the
// memberctl and membershipd programs and the nats CLI.
package e2e
