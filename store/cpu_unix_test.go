//go:build unix

package store_test

import (
	"syscall"
	"time"
)

// cpuTime is the CPU time the process used so far (server, store and
// readers alike): on a shared machine a steadier measure of a read's cost
// than the wall clock.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
