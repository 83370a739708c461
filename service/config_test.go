package service_test

import (
	"testing"
	"time"

	"github.com/unibus/membership/service"
	"github.com/unibus/membership/subjects"
)

func TestConfigDefaults(t *testing.T) {
	var c service.Config
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate(zero) = %v", err)
	}
	if c.Prefix != subjects.DefaultPrefix || c.QueueGroup != subjects.DefaultQueue || c.Skew != service.DefaultSkew ||
		c.Auth != service.AuthEnforce || c.MaxRequest != service.DefaultMaxRequest ||
		c.RequestTimeout != service.DefaultRequestTimeout || c.Version != service.DefaultVersion || c.Logger == nil {
		t.Fatalf("defaults = %+v", c)
	}
	if got := c.NonceTTL(); got != 2*service.DefaultSkew {
		t.Fatalf("NonceTTL = %s, want 2×skew", got)
	}
	// Set values are kept.
	k := service.Config{Prefix: "a.b", QueueGroup: "q", Skew: 5 * time.Second, Auth: service.AuthSoft, MaxRequest: 2048}
	if err := k.Validate(); err != nil {
		t.Fatal(err)
	}
	if k.Prefix != "a.b" || k.QueueGroup != "q" || k.Skew != 5*time.Second || k.Auth != service.AuthSoft || k.MaxRequest != 2048 {
		t.Fatalf("Validate changed set values: %+v", k)
	}
	if got := k.NonceTTL(); got != 10*time.Second {
		t.Fatalf("NonceTTL = %s", got)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  service.Config
	}{
		{"prefix with star", service.Config{Prefix: "a.*"}},
		{"prefix with gt", service.Config{Prefix: "a.>"}},
		{"prefix with empty token", service.Config{Prefix: "a..b"}},
		{"prefix with space", service.Config{Prefix: "a b"}},
		{"queue group with space", service.Config{QueueGroup: "q q"}},
		{"skew 0.5s", service.Config{Skew: 500 * time.Millisecond}},
		{"negative skew", service.Config{Skew: -time.Second}},
		{"skew 2h", service.Config{Skew: 2 * time.Hour}},
		{"auth maybe", service.Config{Auth: "maybe"}},
		{"auth in capitals", service.Config{Auth: "ENFORCE"}},
		{"max request 100", service.Config{MaxRequest: 100}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); err == nil {
				t.Fatalf("Validate(%+v) = nil", tt.cfg)
			}
		})
	}
	t.Run("bounds", func(t *testing.T) {
		for _, skew := range []time.Duration{time.Second, time.Hour} {
			c := service.Config{Skew: skew, MaxRequest: 1024}
			if err := c.Validate(); err != nil {
				t.Errorf("Validate(skew %s) = %v", skew, err)
			}
		}
	})
}

func TestParseAuthMode(t *testing.T) {
	tests := []struct {
		in   string
		want service.AuthMode
		ok   bool
	}{
		{"enforce", service.AuthEnforce, true},
		{"soft", service.AuthSoft, true},
		{"off", service.AuthOff, true},
		{"", "", false},
		{"maybe", "", false},
		{"Enforce", "", false},
		{" off", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := service.ParseAuthMode(tt.in)
			if (err == nil) != tt.ok || got != tt.want {
				t.Fatalf("ParseAuthMode(%q) = %q, %v; want %q ok=%v", tt.in, got, err, tt.want, tt.ok)
			}
		})
	}
}
