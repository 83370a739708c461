package main

import (
	"io"
	"strings"
	"testing"
)

// TestBusFlags: the --bus settings that cannot work are refused with the
// flag named.
func TestBusFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // "" accepts
	}{
		{[]string{"--bus", "off"}, ""},
		{[]string{"--bus", "enforce"}, ""}, // embedded: keys made at start
		{[]string{"--bus", "observe"}, ""},
		{[]string{"--bus", "on"}, `bus mode "on": want off, observe or enforce`},
		{[]string{"--bus", "enforce", "--nats-url", "nats://127.0.0.1:4222"}, "needs --bus-issuer"},
		{[]string{"--bus", "enforce", "--nats-url", "nats://127.0.0.1:4222", "--bus-issuer", "i.nk"}, "needs --bus-system-nkey"},
		{[]string{"--bus", "enforce", "--context", "prod"}, "needs --nats-url"},
		{[]string{"--bus", "enforce", "--routes", "nats://127.0.0.1:6223", "--cluster-listen", "127.0.0.1:6222", "--server-name", "n1"}, "with --routes"},
	} {
		t.Setenv("MEMBERSHIPD_BUS", "")
		_, _, err := parseFlags(tc.args, io.Discard, io.Discard)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v", tc.args, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: %v, want %q", tc.args, err, tc.want)
		}
	}
}
