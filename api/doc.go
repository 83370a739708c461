// Package api defines the request and response bodies of every operation of
// the unibus membership protocol, their limits and validation, and the
// protocol's error type. The service and the client both speak it; it does
// no I/O.
//
// Every body is a msgpack map whose keys are the `msgpack` tags below; a
// body with a key that the type does not declare is rejected.
package api
