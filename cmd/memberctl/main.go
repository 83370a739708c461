// Command memberctl is the command-line client of the unibus membership
// service: it makes identity files, and signs every request with one of
// them, through the client package.
//
// Global flags come before or after the command and can be set through the
// environment (flags win). Human-readable output is the default; --json
// prints one JSON document with snake_case field names. Errors are one line
// on stderr, `memberctl: <op>: <code> <reason>: <message>`, and the exit code
// tells service errors (1), usage errors (2) and connection or local errors
// (3) apart. `memberctl help` documents every command.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/choria-io/fisk"
	"github.com/nats-io/nats.go"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/internal/cli"
	"github.com/unibus/membership/internal/natsconn"
	"github.com/unibus/membership/subjects"
)

// Exit codes.
const (
	exitOK      = 0 // success
	exitService = 1 // the service answered with an error
	exitUsage   = 2 // bad command line
	exitLocal   = 3 // NATS connection, identity file or other local failure
)

// Environment variables read for global flags.
const (
	envIdentity = "MEMBERCTL_IDENTITY"
	envPrefix   = "MEMBERCTL_PREFIX"
	envTimeout  = "MEMBERCTL_TIMEOUT"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// globals are the flags every command accepts.
type globals struct {
	conn     natsconn.Options // as the nats CLI: flags, environment, selected context
	identity string
	prefix   string
	timeout  time.Duration
	json     bool
	bus      bool // connect with the identity's key (client.BusOptions)

	serviceKey string // --service-key: the service key to pin (pin.go)
	noVerify   bool   // --insecure-no-verify: replies are not verified (pin.go)
}

// app is one invocation: its flags, its output and, once a command needs
// it, its NATS connection and client.
type app struct {
	g      globals
	stdout io.Writer
	stderr io.Writer
	nc     *nats.Conn
	cl     *client.Client
	pins   *pinStore // the pin store, once a client verifies replies (pin.go)

	bindings map[string]*binding // per command: its flags and arguments (flags.go)
	fisk     *fisk.Application   // the parser, once built (help.go)

	progressShown bool
	inboxDenied   atomic.Bool // the server refused a subscription (reply inbox)
}

// run executes one command line and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a := &app{stdout: stdout, stderr: stderr, bindings: map[string]*binding{}}
	defer a.close()
	err := a.dispatch(ctx, args)
	a.keepPin(err)
	a.endProgress()
	return a.report(err)
}

func (a *app) close() {
	if a.nc != nil {
		a.nc.Close()
	}
}

// check validates the global flags after parsing.
func (g *globals) check() error {
	if g.timeout <= 0 {
		return usagef("--timeout must be positive")
	}
	if err := subjects.ValidatePrefix(g.prefix); err != nil {
		return usagef("--prefix: %v", err)
	}
	if err := g.conn.Validate(); err != nil {
		return usagef("%v", err)
	}
	if c := g.conn; g.bus && (c.Creds != "" || c.NKey != "" || c.User != "" || c.Token != "") {
		return usagef("--bus connects with the identity's key: drop --user, --token, --creds and --nkey")
	}
	return nil
}

// client loads the identity file and connects to NATS, once.
func (a *app) client() (*client.Client, error) {
	if a.cl != nil {
		return a.cl, nil
	}
	if a.g.identity == "" {
		a.g.identity = defaultIdentity()
	}
	if a.g.identity == "" {
		return nil, usagef("this command signs its requests: give --identity FILE (or set %s)", envIdentity)
	}
	id, err := identity.Load(a.g.identity)
	if err != nil {
		return nil, localErr("load identity", err)
	}
	var busOpts []nats.Option
	if a.g.bus { // the identity's key and inbox prefix (client.BusOptions)
		busOpts = client.BusOptions(id)
	}
	nc, err := a.g.conn.Connect(append(busOpts, nats.Name("memberctl"), nats.Timeout(a.g.timeout),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), "Subscription") {
				a.inboxDenied.Store(true)
			}
		}))...)
	if err != nil {
		return nil, localErr("connect to "+a.g.conn.Describe(), err)
	}
	pinning, err := a.pinOptions()
	if err != nil {
		nc.Close()
		return nil, err
	}
	a.nc = nc
	a.cl = client.New(nc, id, append(pinning, client.WithPrefix(a.g.prefix), client.WithTimeout(a.g.timeout),
		client.WithProgress(a.progress()))...)
	return a.cl, nil
}

// inboxRefused reports whether the server refused a subscription: memberctl
// subscribes only to its reply inbox.
func (a *app) inboxRefused() bool { return a.inboxDenied.Load() }

// defaultIdentity is ~/.config/unibus/identity.id (under $XDG_CONFIG_HOME
// when set) if that file exists.
func defaultIdentity() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	p := filepath.Join(dir, "unibus", "identity.id")
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// dispatch parses the command line with fisk and runs the command.
func (a *app) dispatch(ctx context.Context, args []string) error {
	fa := a.build(ctx)
	if err := cli.CheckEnv(fa); err != nil {
		return usagef("%v", err)
	}
	if pc, err := fa.ParseContext(args); err == nil && pc.SelectedCommand == nil && !answered(pc) {
		fa.UsageWriter(a.stderr)
		fa.Usage(nil)
		return usagef("no command given")
	}
	name, done, code, err := cli.Parse(fa, args)
	switch {
	case done && code != 0:
		return errUsageShown
	case done:
		return nil
	case err != nil:
		return parseError(fa, args, err)
	}
	c := lookup(name)
	if c == nil {
		return usagef("%s needs a subcommand: %s", name, groups[name])
	}
	return c.run(ctx, a, c, nil)
}

// parseError words an error of fisk's parser as memberctl always has:
// "unknown command", or the command's name and what is wrong, with its
// synopsis.
func parseError(fa *fisk.Application, args []string, err error) error {
	if errors.Is(err, fisk.ErrExpectedKnownCommand) {
		word := strings.TrimPrefix(err.Error(), fisk.ErrExpectedKnownCommand.Error()+" but got ")
		return usagef("unknown command %s", word)
	}
	pc, _ := fa.ParseContext(args)
	if pc == nil || pc.SelectedCommand == nil {
		return usagef("%v", err)
	}
	if errors.Is(err, fisk.ErrSubCommandRequired) {
		name := pc.SelectedCommand.FullCommand()
		return usagef("%s needs a subcommand: %s", name, groups[name])
	}
	c := lookup(pc.SelectedCommand.FullCommand())
	if c == nil {
		return usagef("%v", err)
	}
	switch {
	case errors.Is(err, fisk.ErrRequiredArgument):
		err = errors.New("missing arguments")
	case errors.Is(err, fisk.ErrUnexpectedArgument):
		err = errors.New("too many arguments")
	}
	return usagef("%s: %v\nusage: memberctl %s %s", c.name, err, c.name, c.args)
}

// answered reports whether a command line without a command is answered
// by fisk: help, --version, a completion script.
func answered(pc *fisk.ParseContext) bool {
	for _, e := range pc.Elements {
		if f, ok := e.Clause.(*fisk.FlagClause); ok {
			m := f.Model()
			if m.Name == "help" || m.Name == "version" || m.Hidden {
				return true
			}
		}
	}
	return false
}

// lookup finds a command by its full name (nil for a group).
func lookup(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

// output writes v as JSON with --json, else calls text.
func (a *app) output(v any, text func(w io.Writer)) error {
	a.endProgress()
	if a.g.json {
		return writeJSON(a.stdout, v)
	}
	text(a.stdout)
	return nil
}

// note prints a human-readable remark on stderr (also with --json, so that
// stdout stays one JSON document).
func (a *app) note(format string, args ...any) {
	fmt.Fprintf(a.stderr, "memberctl: "+format+"\n", args...)
}
