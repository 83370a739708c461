package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/envelope"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/subjects"
)

// pubPath is where keygen puts the public file of endpoint: next to the
// identity file.
func pubPath(identityFile, endpoint string) string {
	return filepath.Join(filepath.Dir(identityFile), endpoint+".pub")
}

// message is the text of err without its kind: the service's message for
// an *api.Error.
func message(err error) string {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Message
	}
	return err.Error()
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:@,+=") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func keygen(_ context.Context, a *app, c *command, args []string) error {
	fset := newFlagSet(c.name)
	endpoint := fset.String("endpoint", "", "endpoint id of the new identity")
	out := fset.String("out", "", "identity file to write (default NAME.id; never overwritten)")
	if _, err := a.parseArgs(fset, c, args, 0, 0); err != nil {
		return err
	}
	if *endpoint == "" {
		return usagef("keygen: --endpoint is required\nusage: memberctl %s %s", c.name, c.args)
	}
	if err := api.ValidateID("endpoint", *endpoint); err != nil {
		return usagef("keygen: --endpoint: %s", message(err))
	}
	idFile := *out
	if idFile == "" {
		idFile = *endpoint + ".id"
	}
	pubFile := pubPath(idFile, *endpoint)
	if filepath.Clean(pubFile) == filepath.Clean(idFile) {
		return usagef("keygen: --out %s would be the public file too; name it differently (e.g. %s.id)", idFile, *endpoint)
	}
	for _, f := range []string{idFile, pubFile} {
		if _, err := os.Lstat(f); err == nil {
			return localErr("keygen", fmt.Errorf("%s exists; memberctl never overwrites key files", f))
		} else if !errors.Is(err, fs.ErrNotExist) {
			return localErr("keygen", err)
		}
	}
	id, err := identity.New(*endpoint)
	if err != nil {
		return localErr("keygen", err)
	}
	pub, err := id.Public()
	if err != nil {
		return localErr("keygen", err)
	}
	if err := identity.Write(idFile, id); err != nil {
		return localErr("keygen", err)
	}
	if err := writeNew(pubFile, identity.MarshalPublic(pub), 0o644); err != nil {
		_ = os.Remove(idFile) // we just created it: no half-made pair
		return localErr("keygen", err)
	}
	register := a.registerCommand(pubFile)
	v := keygenJSON{Endpoint: pub.Endpoint, SignKey: pub.SignKey, XKey: pub.XKey,
		IdentityFile: idFile, PubFile: pubFile, RegisterCommand: register}
	return a.output(v, func(w io.Writer) {
		fields(w, "endpoint", pub.Endpoint, "sign-key", pub.SignKey, "xkey", pub.XKey,
			"identity file", idFile+" (secret: both seeds, mode 0600)", "public file", pubFile)
		fmt.Fprintf(w, "\nAsk an admin to register it:\n  %s\n", register)
		fmt.Fprintf(w, "Then use it with --identity %s (or %s=%s).\n", shellQuote(idFile), envIdentity, shellQuote(idFile))
	})
}

// registerCommand is the command an admin runs to register pubFile, with
// the connection flags of this invocation that differ from the defaults.
func (a *app) registerCommand(pubFile string) string {
	parts := []string{"memberctl"}
	if a.g.conn.Server != "" {
		parts = append(parts, "--server", shellQuote(a.g.conn.Server))
	}
	if a.g.conn.Context != "" {
		parts = append(parts, "--context", shellQuote(a.g.conn.Context))
	}
	if a.g.prefix != subjects.DefaultPrefix {
		parts = append(parts, "--prefix", shellQuote(a.g.prefix))
	}
	parts = append(parts, "--identity", "ADMIN.id", "identity", "register", "--pub", shellQuote(pubFile))
	return strings.Join(parts, " ")
}

// writeNew creates path with data and mode, refusing to overwrite.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		_ = os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(path)
		return err
	}
	// The umask may have narrowed the mode; a public file is meant to be
	// readable.
	return os.Chmod(path, mode)
}

func whoami(ctx context.Context, a *app, c *command, args []string) error {
	fset := newFlagSet(c.name)
	if _, err := a.parseArgs(fset, c, args, 0, 0); err != nil {
		return err
	}
	cl, err := a.client()
	if err != nil {
		return err
	}
	id, err := cl.Whoami(ctx)
	if err != nil {
		return opErr(subjects.OpWhoami, err)
	}
	v := toIdentity(id)
	return a.output(v, func(w io.Writer) { identityText(w, v) })
}

func identityRegister(ctx context.Context, a *app, c *command, args []string) error {
	fset := newFlagSet(c.name)
	pubFile := fset.String("pub", "", "public file written by keygen")
	endpoint := fset.String("endpoint", "", "endpoint id (without --pub)")
	signKey := fset.String("sign-key", "", "nkeys user public key U… (without --pub)")
	xkey := fset.String("xkey", "", "nkeys curve public key X… (without --pub)")
	admin := fset.Bool("admin", false, "grant the admin role")
	if _, err := a.parseArgs(fset, c, args, 0, 0); err != nil {
		return err
	}
	var pub api.PublicKeys
	switch {
	case *pubFile != "" && (*endpoint != "" || *signKey != "" || *xkey != ""):
		return usagef("identity register: give either --pub or --endpoint, --sign-key and --xkey, not both")
	case *pubFile != "":
		data, err := os.ReadFile(*pubFile)
		if err != nil {
			return localErr("read --pub", err)
		}
		if pub, err = identity.ParsePublic(data); err != nil {
			return localErr("read --pub "+*pubFile, err)
		}
	case *endpoint != "" && *signKey != "" && *xkey != "":
		pub = api.PublicKeys{Endpoint: *endpoint, SignKey: *signKey, XKey: *xkey}
		if !envelope.IsUserKey(pub.SignKey) {
			return usagef("identity register: --sign-key must be an nkeys user public key (U…), not a seed or another key type")
		}
		if !envelope.IsCurveKey(pub.XKey) {
			return usagef("identity register: --xkey must be an nkeys curve public key (X…), not a seed or another key type")
		}
	default:
		return usagef("identity register: give --pub FILE, or all of --endpoint, --sign-key and --xkey\nusage: memberctl %s %s", c.name, c.args)
	}
	cl, err := a.client()
	if err != nil {
		return err
	}
	id, err := cl.Register(ctx, pub, *admin)
	if err != nil {
		return opErr(subjects.OpIdentityRegister, err)
	}
	v := toIdentity(id)
	return a.output(v, func(w io.Writer) { identityText(w, v) })
}

// endpointCommand runs disable or enable.
func endpointCommand(ctx context.Context, a *app, c *command, args []string, op subjects.Op,
	call func(*client.Client, context.Context, string) (*api.Identity, error)) error {
	return oneArgCommand(ctx, a, c, args, op, call, func(id *api.Identity) error {
		v := toIdentity(id)
		return a.output(v, func(w io.Writer) { identityText(w, v) })
	})
}

// oneArgCommand runs a command that takes exactly one argument (an
// endpoint or a room), makes one client call with it and shows the result.
func oneArgCommand[T any](ctx context.Context, a *app, c *command, args []string, op subjects.Op,
	call func(*client.Client, context.Context, string) (T, error), show func(T) error) error {
	fset := newFlagSet(c.name)
	pos, err := a.parseArgs(fset, c, args, 1, 1)
	if err != nil {
		return err
	}
	cl, err := a.client()
	if err != nil {
		return err
	}
	v, err := call(cl, ctx, pos[0])
	if err != nil {
		return opErr(op, err)
	}
	return show(v)
}

func identityDisable(ctx context.Context, a *app, c *command, args []string) error {
	return endpointCommand(ctx, a, c, args, subjects.OpIdentityDisable, (*client.Client).Disable)
}

func identityEnable(ctx context.Context, a *app, c *command, args []string) error {
	return endpointCommand(ctx, a, c, args, subjects.OpIdentityEnable, (*client.Client).Enable)
}

func identityGet(ctx context.Context, a *app, c *command, args []string) error {
	fset := newFlagSet(c.name)
	pos, err := a.parseArgs(fset, c, args, 1, 1)
	if err != nil {
		return err
	}
	cl, err := a.client()
	if err != nil {
		return err
	}
	p, err := cl.Lookup(ctx, pos[0])
	if err != nil {
		return opErr(subjects.OpIdentityGet, err)
	}
	v := publicKeysJSON{Endpoint: p.Endpoint, SignKey: p.SignKey, XKey: p.XKey, Disabled: p.Disabled}
	return a.output(v, func(w io.Writer) {
		fields(w, "endpoint", v.Endpoint, "sign-key", v.SignKey, "xkey", v.XKey, "disabled", yesNo(v.Disabled))
	})
}

// pageFlags adds --after and --limit to fs.
func pageFlags(fset *flag.FlagSet, after *string, limit *int) {
	fset.StringVar(after, "after", "", "start after this entry: the next value printed by the page before")
	fset.IntVar(limit, "limit", 0, "entries per page (default the service's, 100; at most 500)")
}

func checkLimit(c *command, limit int) error {
	if _, err := api.PageLimit(limit); err != nil {
		return usagef("%s: --limit must be between 1 and %d", c.name, api.MaxPage)
	}
	return nil
}

func identityList(ctx context.Context, a *app, c *command, args []string) error {
	return pageCommand(ctx, a, c, args, subjects.OpIdentityList, func(cl *client.Client, after string, limit int) (any, func(io.Writer), error) {
		p, err := cl.Identities(ctx, after, limit)
		if err != nil {
			return nil, nil, err
		}
		v := identityPageJSON{Identities: make([]identityJSON, 0, len(p.Identities)), Next: p.Next}
		for i := range p.Identities {
			v.Identities = append(v.Identities, toIdentity(&p.Identities[i]))
		}
		return v, func(w io.Writer) {
			rows := [][]string{{"ENDPOINT", "ADMIN", "DISABLED", "SIGN-KEY", "XKEY"}}
			for _, id := range v.Identities {
				rows = append(rows, []string{id.Endpoint, yesNo(id.Admin), yesNo(id.Disabled), id.SignKey, id.XKey})
			}
			table(w, rows)
			nextText(w, v.Next)
		}, nil
	})
}

// pageCommand runs a command that lists one page: [--after A] [--limit N],
// no positional arguments.
func pageCommand(ctx context.Context, a *app, c *command, args []string, op subjects.Op,
	fetch func(cl *client.Client, after string, limit int) (any, func(io.Writer), error)) error {
	fset := newFlagSet(c.name)
	var after string
	var limit int
	pageFlags(fset, &after, &limit)
	if _, err := a.parseArgs(fset, c, args, 0, 0); err != nil {
		return err
	}
	if err := checkLimit(c, limit); err != nil {
		return err
	}
	cl, err := a.client()
	if err != nil {
		return err
	}
	v, text, err := fetch(cl, after, limit)
	if err != nil {
		return opErr(op, err)
	}
	return a.output(v, text)
}
