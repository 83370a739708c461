package main

import (
	"errors"
	"flag"
	"io"
	"strconv"
	"strings"

	"github.com/choria-io/fisk"
)

// A command declares its own flags on a standard flag set and asks
// parseArgs for its positional arguments. fisk parses the command line,
// so the declarations are made twice: once when the fisk application is
// built (bind runs the command with a binding and stops it in parseArgs:
// the flags are mirrored on its fisk command, for parsing, help and
// completion), and once when the command runs (parseArgs then copies in
// what fisk parsed). Commands declare their flags before anything else.

// errDeclared stops a command whose flags were just declared.
var errDeclared = errors.New("flags declared")

// binding is a command's flags and arguments as fisk parses them.
type binding struct {
	cmd   *fisk.CmdClause
	flags *flag.FlagSet    // the flag set of the declaring run, fisk's targets
	set   map[string]*bool // per flag: given on the command line
	args  []*string        // positional arguments, in order
	rest  []string         // further arguments of an unbounded command
}

// newFlagSet returns a flag set for a command's declarations.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parseArgs declares fs's flags on the command's fisk clause (while the
// application is built), or sets them to what fisk parsed and returns the
// positional arguments, checked against [min, max] (max < 0: unbounded).
func (a *app) parseArgs(fs *flag.FlagSet, c *command, _ []string, min, max int) ([]string, error) {
	b := a.bindings[c.name]
	if b.flags == nil {
		b.declare(fs, c, min, max)
		return nil, errDeclared
	}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if *b.set[f.Name] && err == nil {
			err = fs.Set(f.Name, b.flags.Lookup(f.Name).Value.String())
		}
	})
	if err != nil {
		return nil, usagef("%s: %v", c.name, err)
	}
	var pos []string
	for _, p := range b.args {
		if *p != "" {
			pos = append(pos, *p)
		}
	}
	pos = append(pos, b.rest...)
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

// declare mirrors fs's flags on the fisk command, and its positional
// arguments, named by the synopsis' capitals ("ROOM ENDPOINT"); the first
// min are required.
func (b *binding) declare(fs *flag.FlagSet, c *command, min, max int) {
	b.flags, b.set = fs, map[string]*bool{}
	fs.VisitAll(func(f *flag.Flag) {
		b.set[f.Name] = new(bool)
		fc := b.cmd.Flag(f.Name, f.Usage).IsSetByUser(b.set[f.Name])
		if ph := placeholder(c.args, f.Name); ph != "" {
			fc.PlaceHolder(ph)
		}
		fc.SetValue(f.Value)
	})
	names := argNames(c.args)
	for i := 0; i < len(names) && (max < 0 || i < max); i++ {
		arg := b.cmd.Arg(strings.ToLower(names[i]), "").PlaceHolder(names[i])
		if i < min {
			arg.Required()
		}
		b.args = append(b.args, arg.String())
	}
	if max < 0 || max > len(names) {
		b.cmd.Arg("args", "").StringsVar(&b.rest)
	}
}

// placeholder is the word after --name in a synopsis: "N" in "[--limit N]".
func placeholder(synopsis, name string) string {
	_, after, ok := strings.Cut(synopsis, "--"+name+" ")
	if !ok {
		return ""
	}
	word, _, _ := strings.Cut(after, " ")
	return strings.Trim(word, "[]().|")
}

// argNames are the leading capitalised words of a synopsis.
func argNames(synopsis string) []string {
	var names []string
	for _, w := range strings.Fields(synopsis) {
		if w != strings.ToUpper(w) || strings.HasPrefix(w, "-") || strings.ContainsAny(w, "[]()|") {
			break
		}
		names = append(names, w)
	}
	return names
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

// IsCumulative tells fisk the flag may be repeated.
func (l *listFlag) IsCumulative() bool { return true }

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
