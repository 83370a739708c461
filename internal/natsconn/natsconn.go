// Package natsconn connects memberctl and membershipd to NATS the way the
// nats CLI connects: the same flag names and environment variables
// (-s/--server NATS_URL, --user, --password, --token, --creds, --nkey,
// --inbox-prefix, --tlscert/--tlskey/--tlsca, --context NATS_CONTEXT), and
// the context selected with "nats context select" when no connection option
// is given at all.
package natsconn

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/synadia-io/orbit.go/natscontext"
)

// Options are the connection settings of a command line.
type Options struct {
	Server      string
	Context     string
	User        string
	Password    string
	Token       string
	Creds       string
	NKey        string
	InboxPrefix string
	TLSCert     string
	TLSKey      string
	TLSCA       string
}

// Flag describes one connection flag for a program's own flag parsing.
type Flag struct {
	Name  string
	Short string // one letter, or empty
	Env   string // environment variable, named as by the nats CLI
	Usage string
	Value *string
}

// Flags lists the connection flags bound to o's fields.
func (o *Options) Flags() []Flag {
	return []Flag{
		{"server", "s", "NATS_URL", "NATS server URLs, comma-separated", &o.Server},
		{"context", "", "NATS_CONTEXT", "nats CLI context to connect with (default: the one chosen with 'nats context select', when no other connection option is given)", &o.Context},
		{"user", "", "NATS_USER", "NATS user name (or token)", &o.User},
		{"password", "", "NATS_PASSWORD", "NATS password", &o.Password},
		{"token", "", "NATS_TOKEN", "NATS token", &o.Token},
		{"creds", "", "NATS_CREDS", "NATS user credentials file (JWT deployments)", &o.Creds},
		{"nkey", "", "NATS_NKEY", "NATS user nkey seed file (SU…)", &o.NKey},
		{"inbox-prefix", "", "NATS_INBOX_PREFIX", "inbox prefix for replies, e.g. _INBOX_client when the user may subscribe to that prefix only", &o.InboxPrefix},
		{"tlscert", "", "NATS_CERT", "client TLS certificate file (with --tlskey)", &o.TLSCert},
		{"tlskey", "", "NATS_KEY", "client TLS private key file", &o.TLSKey},
		{"tlsca", "", "NATS_CA", "CA certificate file to verify the NATS servers with", &o.TLSCA},
	}
}

// Validate rejects combinations that cannot work.
func (o *Options) Validate() error {
	var errs []error
	if (o.TLSCert != "") != (o.TLSKey != "") {
		errs = append(errs, errors.New("--tlscert and --tlskey go together"))
	}
	n := 0
	for _, s := range []string{o.User, o.Token, o.Creds, o.NKey} {
		if s != "" {
			n++
		}
	}
	if n > 1 {
		errs = append(errs, errors.New("give one of --user, --token, --creds and --nkey"))
	}
	if o.Password != "" && o.User == "" {
		errs = append(errs, errors.New("--password needs --user"))
	}
	return errors.Join(errs...)
}

// explicit reports whether any option other than the context was given.
func (o *Options) explicit() bool {
	return o.Server != "" || o.User != "" || o.Token != "" || o.Creds != "" || o.NKey != "" ||
		o.InboxPrefix != "" || o.TLSCert != "" || o.TLSKey != "" || o.TLSCA != ""
}

// Describe names what Connect connects to, for error messages.
func (o *Options) Describe() string {
	switch {
	case o.Context != "":
		return "NATS context " + o.Context
	case o.explicit():
		if o.Server == "" {
			return nats.DefaultURL
		}
		return o.Server
	}
	return "the selected NATS context (or " + nats.DefaultURL + ")"
}

// Connect dials NATS. A named context is the base and the options given
// override it, as in the nats CLI; without a named context, the options
// alone decide, and with no option at all the selected context does (or
// nats://127.0.0.1:4222 when none is selected). extra come last.
func (o *Options) Connect(extra ...nats.Option) (*nats.Conn, error) {
	opts, err := o.natsOptions()
	if err != nil {
		return nil, err
	}
	opts = append(opts, extra...)
	if o.Context != "" || !o.explicit() {
		nc, _, err := natscontext.Connect(o.Context, opts...)
		return nc, err
	}
	return nats.Connect(o.Server, opts...)
}

// natsOptions turns the given options into nats.go options.
func (o *Options) natsOptions() ([]nats.Option, error) {
	var opts []nats.Option
	if o.Server != "" {
		// Overrides a context's URL: nats.go reads the servers after the
		// options, whatever URL Connect was given.
		servers := strings.Split(o.Server, ",")
		for i := range servers {
			servers[i] = strings.TrimSpace(servers[i])
		}
		opts = append(opts, func(no *nats.Options) error { no.Servers, no.Url = servers, ""; return nil })
	}
	switch {
	case o.User != "":
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	case o.Token != "":
		opts = append(opts, nats.Token(o.Token))
	case o.Creds != "":
		opts = append(opts, nats.UserCredentials(o.Creds))
	case o.NKey != "":
		nk, err := nats.NkeyOptionFromSeed(o.NKey)
		if err != nil {
			return nil, fmt.Errorf("--nkey: %w", err)
		}
		opts = append(opts, nk)
	}
	if o.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(o.InboxPrefix))
	}
	if o.TLSCert != "" {
		opts = append(opts, nats.ClientCert(o.TLSCert, o.TLSKey))
	}
	if o.TLSCA != "" {
		opts = append(opts, nats.RootCAs(o.TLSCA))
	}
	return opts, nil
}

// Target names the deployment Connect reaches, stably across invocations:
// the sorted server list when --server is given, else "context:NAME" of the
// named or selected context, else the default URL.
func (o *Options) Target() string {
	if o.Server != "" {
		list := strings.Split(o.Server, ",")
		for i := range list {
			list[i] = strings.TrimSpace(list[i])
		}
		sort.Strings(list)
		return strings.Join(list, ",")
	}
	if o.Context != "" {
		return "context:" + o.Context
	}
	if name := selectedContext(); name != "" && !o.explicit() {
		return "context:" + name
	}
	return nats.DefaultURL
}

// selectedContext is the name `nats context select` stored, read where
// natscontext reads it: $XDG_CONFIG_HOME/nats/context.txt, else under the
// user's ~/.config.
func selectedContext() string {
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		u, err := user.Current()
		if err != nil {
			return ""
		}
		dir = filepath.Join(u.HomeDir, ".config")
	}
	b, err := os.ReadFile(filepath.Join(dir, "nats", "context.txt"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
