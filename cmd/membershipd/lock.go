package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// lockFile is the lock a running membershipd holds in its data directory.
const lockFile = "membershipd.lock"

// lockDataDir takes an exclusive lock on dir before anything in it is
// opened: two processes on one JetStream store directory corrupt it (the
// second one "recovers" files the first one is writing). The lock file
// holds the holder's pid, so that a second process can name it. The lock
// ends with the process (the kernel drops it), so a crash leaves nothing
// to clean up. Close the returned file to release it.
func lockDataDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("data directory %s is in use by membershipd pid %s (lock %s)", dir, pidOf(holder), path)
		}
		return nil, fmt.Errorf("lock data directory %s: %w", dir, err)
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// pidOf reads the pid a lock file holds, or "unknown".
func pidOf(data []byte) string {
	if pid, err := strconv.Atoi(string(bytes.TrimSpace(data))); err == nil {
		return strconv.Itoa(pid)
	}
	return "unknown"
}

// checkListen fails at once when addr (host:port; port 0 or -1 picks one)
// is taken, instead of the embedded server waiting out its start-up
// timeout on a port it cannot bind.
func checkListen(flag, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "0" || port == "-1" {
		return nil // reported by the caller's own parsing
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if err != nil {
		return fmt.Errorf("%s %s: cannot listen (%v); is another membershipd or nats-server running there?", flag, addr, err)
	}
	return l.Close()
}
