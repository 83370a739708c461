package natsconn

import "testing"

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
