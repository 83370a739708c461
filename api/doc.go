// Package api is the unibus membership protocol: the operation table
// ([Ops]: each operation, whether it mutates, its request and reply types),
// the request and response bodies, their limits and validation, and the
// protocol's error type. The service, the client, memberctl and memberbench
// all speak it; it does no I/O.
//
// Layering: api imports subjects, never the reverse. subjects holds the
// names that travel on the wire (subjects, operation names, headers, codes)
// and has no dependency; the operation table needs the body types, so it
// lives here and names each operation by its subjects.Op. No other package
// lists which operations mutate.
//
// Every body is a msgpack map whose keys are the `msgpack` tags below; a
// body with a key that the type does not declare is rejected.
package api
