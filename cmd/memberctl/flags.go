package main

import (
	"errors"
	"flag"
	"io"
	"strconv"
	"strings"
)

// errHelp is what a flag set returns for -h or --help.
var errHelp = flag.ErrHelp

// errHelpShown ends a command that printed its help: exit 0.
var errHelpShown = errors.New("help shown")

// newFlagSet returns a flag set that reports errors to its caller instead
// of printing them.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// register adds the global flags to fs with their current values as
// defaults, so that a command's flag set accepts them after the command too.
func (g *globals) register(fs *flag.FlagSet) {
	for _, f := range g.conn.Flags() {
		fs.StringVar(f.Value, f.Name, *f.Value, "")
		if f.Short != "" {
			fs.StringVar(f.Value, f.Short, *f.Value, "")
		}
	}
	fs.StringVar(&g.identity, "identity", g.identity, "")
	fs.StringVar(&g.prefix, "prefix", g.prefix, "")
	fs.DurationVar(&g.timeout, "timeout", g.timeout, "")
	fs.BoolVar(&g.json, "json", g.json, "")
	fs.BoolVar(&g.bus, "bus", g.bus, "")
	fs.StringVar(&g.serviceKey, "service-key", g.serviceKey, "")
	fs.BoolVar(&g.noVerify, "insecure-no-verify", g.noVerify, "")
}

// parseArgs parses a command's flags wherever they appear among its
// arguments (everything after a lone "--" is positional) and checks the
// number of positional arguments against [min, max] (max < 0: unbounded).
func (a *app) parseArgs(fs *flag.FlagSet, c *command, args []string, min, max int) ([]string, error) {
	var tail []string
	for i, s := range args {
		if s == "--" {
			args, tail = args[:i], args[i+1:]
			break
		}
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, errHelp) {
				a.commandHelp(a.stdout, c)
				return nil, errHelpShown
			}
			return nil, usagef("%s: %v\nusage: memberctl %s %s", c.name, err, c.name, c.args)
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	pos = append(pos, tail...)
	if len(pos) < min || (max >= 0 && len(pos) > max) {
		what := "too many arguments"
		if len(pos) < min {
			what = "missing arguments"
		}
		return nil, usagef("%s: %s\nusage: memberctl %s %s", c.name, what, c.name, c.args)
	}
	if err := a.g.check(); err != nil {
		return nil, err
	}
	return pos, nil
}

// listFlag collects a repeatable flag; commas separate values too.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// epochFlag is a positive epoch number.
type epochFlag uint64

func (e *epochFlag) String() string { return strconv.FormatUint(uint64(*e), 10) }

func (e *epochFlag) Set(v string) error {
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n == 0 {
		return errors.New("must be a positive integer")
	}
	*e = epochFlag(n)
	return nil
}
