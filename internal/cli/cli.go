package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/choria-io/fisk"

	"github.com/unibus/membership/internal/buildinfo"
)

// New returns an application named name, printing help and the version
// ("NAME VERSION") on stdout, and its own errors on stderr.
func New(name, help string, stdout, stderr io.Writer) *fisk.Application {
	app := fisk.New(name, help)
	app.UsageWriter(stdout)
	app.ErrorWriter(stderr)
	app.HelpFlag.Short('h')
	app.Version(name + " " + buildinfo.Version())
	// fisk has --completion-script-bash and -zsh; fish's is ours.
	app.Flag("completion-script-fish", "Generate completion script for fish.").Hidden().
		PreAction(func(*fisk.ParseContext) error {
			if _, err := io.WriteString(stdout, FishCompletion(app)); err != nil {
				return err
			}
			panic(exit{0}) // as fisk's terminate(0), caught by Parse
		}).UnNegatableBool()
	return app
}

// exit carries a code fisk asked to terminate with (after help, --version
// or a completion script) out of its parser.
type exit struct{ code int }

// Parse parses args with app. done is true when fisk already answered the
// command line itself (help, version, completion) and the program should
// exit with code; else err is a usage error (with a suggestion when a word
// is misspelt: see [Suggest]) or nil, and command is the selected command.
func Parse(app *fisk.Application, args []string) (command string, done bool, code int, err error) {
	app.Terminate(func(c int) { panic(exit{c}) })
	defer func() {
		if r := recover(); r != nil {
			e, ok := r.(exit)
			if !ok {
				panic(r)
			}
			command, done, code, err = "", true, e.code, nil
		}
	}()
	command, err = app.Parse(args)
	if err != nil {
		if s := Suggest(app, args, err); s != "" {
			err = fmt.Errorf("%w; did you mean %q?", err, s)
		}
		return "", false, 0, err
	}
	return command, false, 0, nil
}

// quoted finds the word an error names: fisk quotes it.
var quoted = regexp.MustCompile(`['"]([^'"]+)['"]`)

// Suggest is the command or flag nearest to the one an error of fisk
// names as unknown in args, or "": a flag of the application or of the
// command args select.
func Suggest(app *fisk.Application, args []string, err error) string {
	m := app.Model()
	var candidates []string
	switch {
	case errors.Is(err, fisk.ErrExpectedKnownCommand):
		candidates = commandNames(m.CmdGroupModel)
	case errors.Is(err, fisk.ErrUnknownLongFlag):
		groups := []*fisk.FlagGroupModel{m.FlagGroupModel}
		if pc, _ := app.ParseContext(args); pc != nil && pc.SelectedCommand != nil {
			groups = append(groups, pc.SelectedCommand.Model().FlagGroupModel)
		}
		for _, g := range groups {
			for _, f := range g.Flags {
				if !f.Hidden {
					candidates = append(candidates, "--"+f.Name)
				}
			}
		}
	default:
		return ""
	}
	match := quoted.FindAllStringSubmatch(err.Error(), -1)
	if len(match) == 0 {
		return ""
	}
	return closest(match[len(match)-1][1], candidates)
}

// commandNames lists the visible commands at every level, groups included.
func commandNames(g *fisk.CmdGroupModel) []string {
	var out []string
	for _, c := range g.Commands {
		if !c.Hidden {
			out = append(out, c.Name)
			out = append(out, commandNames(c.CmdGroupModel)...)
		}
	}
	return out
}

// allFlags lists the visible flags of the application and of every command.
func allFlags(m *fisk.ApplicationModel) []*fisk.FlagModel {
	var out []*fisk.FlagModel
	add := func(g *fisk.FlagGroupModel) {
		for _, f := range g.Flags {
			if !f.Hidden {
				out = append(out, f)
			}
		}
	}
	add(m.FlagGroupModel)
	for _, c := range m.FlattenedCommands() {
		add(c.FlagGroupModel)
	}
	return out
}

// closest is the candidate nearest to word by edit distance, if it is near
// enough to be a typo (fewer edits than half its letters, plus one).
func closest(word string, candidates []string) string {
	best, bestDist := "", len(word)/2+1
	sort.Strings(candidates)
	for _, c := range candidates {
		if d := distance(word, c); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

// distance is the Levenshtein distance of a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// FishCompletion is a fish completion script for app: its commands, and
// the flags of the application and of each command, with their help.
func FishCompletion(app *fisk.Application) string {
	m := app.Model()
	var b strings.Builder
	fmt.Fprintf(&b, "# fish completion for %s; load with: %s --completion-script-fish | source\n", m.Name, m.Name)
	fmt.Fprintf(&b, "complete -c %s -f\n", m.Name)
	fishFlags(&b, m.Name, "", m.FlagGroupModel)
	fishCommands(&b, m.Name, nil, m.CmdGroupModel)
	return b.String()
}

func fishCommands(b *strings.Builder, name string, parents []string, g *fisk.CmdGroupModel) {
	var siblings []string
	for _, c := range g.Commands {
		siblings = append(siblings, c.Name)
	}
	for _, c := range g.Commands {
		if c.Hidden {
			continue
		}
		cond := fishCondition(parents, siblings)
		fmt.Fprintf(b, "complete -c %s -n %s -a %s -d %s\n", name, fishQuote(cond), c.Name, fishQuote(firstLine(c.Help)))
		path := append(append([]string{}, parents...), c.Name)
		fishFlags(b, name, "__fish_seen_subcommand_from "+c.Name, c.FlagGroupModel)
		fishCommands(b, name, path, c.CmdGroupModel)
	}
}

// fishCondition holds where parents were typed and none of the commands
// at this level yet.
func fishCondition(parents, siblings []string) string {
	var parts []string
	if len(parents) == 0 {
		parts = append(parts, "not __fish_seen_subcommand_from "+strings.Join(siblings, " "))
	} else {
		for _, p := range parents {
			parts = append(parts, "__fish_seen_subcommand_from "+p)
		}
		parts = append(parts, "not __fish_seen_subcommand_from "+strings.Join(siblings, " "))
	}
	return strings.Join(parts, "; and ")
}

func fishFlags(b *strings.Builder, name, cond string, g *fisk.FlagGroupModel) {
	for _, f := range g.Flags {
		if f.Hidden {
			continue
		}
		fmt.Fprintf(b, "complete -c %s", name)
		if cond != "" {
			fmt.Fprintf(b, " -n %s", fishQuote(cond))
		}
		fmt.Fprintf(b, " -l %s", f.Name)
		if f.Short != 0 {
			fmt.Fprintf(b, " -s %c", f.Short)
		}
		if !f.IsBoolFlag() {
			b.WriteString(" -r -F")
		}
		fmt.Fprintf(b, " -d %s\n", fishQuote(firstLine(f.Help)))
	}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// fishQuote quotes s for fish: single quotes, with \ and ' escaped.
func fishQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// CheckEnv tries the environment variable of every flag of app that has
// one set, so that a bad value is named by its variable before parsing
// (fisk would report the value's error alone). Parsing sets every value
// again.
func CheckEnv(app *fisk.Application) error {
	m := app.Model()
	flags := allFlags(m)
	var errs []error
	for _, f := range flags {
		if f.Envar == "" || f.Value == nil {
			continue
		}
		if v := os.Getenv(f.Envar); v != "" {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %v", f.Envar, v, err))
			}
		}
	}
	return errors.Join(errs...)
}

// CompletionScript writes the completion script of shell (bash, zsh or
// fish) for app to w. bash's and zsh's are fisk's: they call the program
// with --completion-bash or --completion-zsh-menu as the user types.
func CompletionScript(app *fisk.Application, shell string, w io.Writer) error {
	var tmpl string
	switch shell {
	case "bash":
		tmpl = fisk.BashCompletionTemplate
	case "zsh":
		tmpl = fisk.ZshCompletionTemplate
	case "fish":
		_, err := io.WriteString(w, FishCompletion(app))
		return err
	default:
		return fmt.Errorf("unknown shell %q (bash, zsh or fish)", shell)
	}
	pc, err := app.ParseContext(nil)
	if err != nil {
		return err
	}
	app.UsageWriter(w)
	return app.UsageForContextWithTemplate(pc, 2, tmpl)
}
