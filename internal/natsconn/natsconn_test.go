package natsconn

import (
	"os"
	"path/filepath"
	"testing"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
		ok   bool
	}{
		{"nothing", Options{}, true},
		{"user and password", Options{User: "u", Password: "p"}, true},
		{"password alone", Options{Password: "p"}, false},
		{"nkey and creds", Options{NKey: "a", Creds: "b"}, false},
		{"user and token", Options{User: "u", Token: "t"}, false},
		{"cert without key", Options{TLSCert: "c"}, false},
		{"cert and key", Options{TLSCert: "c", TLSKey: "k", TLSCA: "ca"}, true},
	} {
		if err := tc.o.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: Validate() = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}

func TestDescribe(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{}, "the selected NATS context (or nats://127.0.0.1:4222)"},
		{Options{Context: "prod"}, "NATS context prod"},
		{Options{Server: "nats://n1:4222"}, "nats://n1:4222"},
		{Options{NKey: "user.nk"}, "nats://127.0.0.1:4222"},
	} {
		if got := tc.o.Describe(); got != tc.want {
			t.Errorf("%+v: Describe() = %q, want %q", tc.o, got, tc.want)
		}
	}
}

func TestTarget(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	if got := (&Options{Server: "nats://b:4222, nats://a:4222"}).Target(); got != "nats://a:4222,nats://b:4222" {
		t.Errorf("servers: %q, want them sorted", got)
	}
	if got := (&Options{}).Target(); got != "nats://127.0.0.1:4222" {
		t.Errorf("nothing selected: %q", got)
	}
	if err := os.MkdirAll(filepath.Join(dir, "nats"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "nats", "context.txt"), []byte("prod\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{}, "context:prod"},
		{Options{Context: "staging"}, "context:staging"},
		{Options{NKey: "u.nk"}, "nats://127.0.0.1:4222"}, // an option given: the selected context is not used
	} {
		if got := tc.o.Target(); got != tc.want {
			t.Errorf("%+v: Target() = %q, want %q", tc.o, got, tc.want)
		}
	}
}
