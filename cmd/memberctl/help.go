package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/choria-io/fisk"

	"github.com/unibus/membership/internal/cli"
	"github.com/unibus/membership/subjects"
)

// command is one memberctl command.
type command struct {
	name    string // one or two words: "whoami", "room create"
	args    string // synopsis of its arguments
	summary string // one line
	help    string // more detail for `memberctl help <command>`
	// run declares the command's flags, gets its arguments from
	// a.parseArgs (flags.go) and runs it; args is nil: fisk holds the line.
	run func(ctx context.Context, a *app, c *command, args []string) error
}

// groups are the first words of two-word commands.
var groups = map[string]string{
	"identity": "register, disable, enable, get, list",
	"room":     "create, get, members, key, add, remove, rekey, leave, delete, mine",
}

// commands lists every command in help order.
var commands = []command{
	{name: "keygen", args: "--endpoint NAME [--out FILE]", run: keygen,
		summary: "make a new identity file and its public file (no NATS needed)",
		help: "Generates a signing key (nkeys user, U…) and a key-exchange key (nkeys curve, X…) for endpoint\n" +
			"NAME. Writes the identity file FILE (default NAME.id, mode 0600, holds both seeds, never\n" +
			"overwritten) and NAME.pub next to it (mode 0644, public keys only: give it to an admin).\n" +
			"Prints the public keys and the command an admin runs to register them."},
	{name: "whoami", run: whoami,
		summary: "show the identity of --identity as the service knows it"},
	{name: "identity register", args: "(--pub FILE | --endpoint E --sign-key U… --xkey X…) [--admin]", run: identityRegister,
		summary: "register an identity or replace its keys and role (admin)",
		help: "--pub reads a public file written by keygen; alternatively give the endpoint and both public\n" +
			"keys. --admin grants the admin role. Registering an existing endpoint replaces its keys."},
	{name: "identity disable", args: "ENDPOINT", run: identityDisable,
		summary: "disable an identity: its requests are refused (admin)"},
	{name: "identity enable", args: "ENDPOINT", run: identityEnable,
		summary: "enable a disabled identity (admin)"},
	{name: "identity get", args: "ENDPOINT", run: identityGet,
		summary: "show an endpoint's public keys"},
	{name: "identity list", args: "[--after ENDPOINT] [--limit N]", run: identityList,
		summary: "list identities, one page (admin)",
		help: "Pages are sorted by endpoint; pass the printed next endpoint as --after for the next page.\n" +
			"--limit defaults to the service's page size (100, at most 500)."},
	{name: "room create", args: "ROOM --subject SUBJECT [--member ENDPOINT]...", run: roomCreate,
		summary: "create a room you own on a NATS subject",
		help: "Generates the room key and seals it to you and every --member (repeatable, or comma\n" +
			"separated), looking up their registered xkeys. The service never sees the key in clear."},
	{name: "room get", args: "ROOM", run: roomGet,
		summary: "show a room (members)"},
	{name: "room members", args: "ROOM [--after ENDPOINT --limit N | --all]", run: roomMembers,
		summary: "list a room's members with their public keys (members)"},
	{name: "room key", args: "ROOM [--epoch N]", run: roomKey,
		summary: "fetch and open your own room key, current epoch by default (members)",
		help: "Prints the epoch and the key in hex. JSON: {\"room\", \"epoch\", \"key\"}. The key is secret:\n" +
			"do not paste it into logs."},
	{name: "room add", args: "ROOM ENDPOINT", run: roomAdd,
		summary: "add a member, sealing the current key to it (owner)"},
	{name: "room remove", args: "ROOM ENDPOINT [--no-rekey]", run: roomRemove,
		summary: "remove a member, then rekey for the remaining members (owner)",
		help: "The removed member still holds the current key, so memberctl moves the room to the next\n" +
			"epoch with a fresh key sealed to the remaining members. --no-rekey skips that; the room then\n" +
			"owes a rekey (`memberctl room rekey ROOM`)."},
	{name: "room rekey", args: "ROOM", run: roomRekey,
		summary: "move a room to the next epoch with a fresh key for every member (owner)"},
	{name: "room leave", args: "ROOM", run: roomLeave,
		summary: "end your own membership of a room"},
	{name: "room delete", args: "ROOM", run: roomDelete,
		summary: "delete a room (owner)"},
	{name: "room mine", args: "[--after ROOM] [--limit N]", run: roomMine,
		summary: "list the rooms you are a member of, one page"},
	{name: "audit", args: "ROOM | --identities", run: audit,
		summary: "show a room's (or, admins, the identity registry's) audit trail and verify it",
		help: "Every accepted change of the room is one entry, signed by the service and linked to the one\n" +
			"before; --identities reads the registry's chain (register, disable, enable; admins only).\n" +
			"Entries must be signed by the pinned service key (see --service-key) or a key it rotated\n" +
			"from. The last verified entry of each chain is remembered in known_services.json: a trail\n" +
			"that later ends before it, or differs at it, is a rollback. Exits 3 if the trail does not verify."},
}

// globalFlags defines the flags every command accepts on the application,
// bound to g, with their environment variables (flags win; an empty
// variable counts as unset).
func (g *globals) globalFlags(app *fisk.Application) {
	g.conn.Register(app)
	app.GetFlag("context").Help("nats CLI context; the connection options override it. With no connection option at all, the context chosen with 'nats context select' is used, else nats://127.0.0.1:4222")
	app.Flag("identity", "identity file written by keygen; signs every request (default ~/.config/unibus/identity.id if it exists)").
		Envar(envIdentity).PlaceHolder("FILE").StringVar(&g.identity)
	app.Flag("prefix", "subject prefix of the service").Envar(envPrefix).Default(subjects.DefaultPrefix).StringVar(&g.prefix)
	app.Flag("timeout", "wait for each reply; a request that times out is resent up to 3 times").
		Envar(envTimeout).Default("5s").PlaceHolder("DUR").DurationVar(&g.timeout)
	app.Flag("json", "machine output: one JSON document on stdout, snake_case field names").UnNegatableBoolVar(&g.json)
	app.Flag("bus", "connect with the identity's signing key and its own inbox prefix, as a bus that enforces membership "+
		"requires (membershipd --bus enforce; docs/deploy.md)").UnNegatableBoolVar(&g.bus)
	app.Flag("service-key", "the service's public key: every reply must be signed by it. Without it the key of the first "+
		"verified reply is trusted and stored in known_services.json beside the identity file, per server set and prefix; "+
		"a later key is accepted only through a rotation statement signed by the stored one, or by giving it here").
		Envar(envServiceKey).PlaceHolder("N…").StringVar(&g.serviceKey)
	app.Flag("insecure-no-verify", "do not verify replies (said on stderr)").Envar(envNoVerify).UnNegatableBoolVar(&g.noVerify)
}

// build makes the fisk application: the global flags, and each command
// with the flags and arguments it declares (flags.go).
func (a *app) build(ctx context.Context) *fisk.Application {
	app := cli.New("memberctl", overview, a.stdout, a.stderr)
	a.fisk = app
	app.UsageTemplate(usageTemplate)
	a.g.globalFlags(app)
	parents := map[string]*fisk.CmdClause{}
	for name, list := range groups {
		parents[name] = app.Command(name, name+" commands: "+list)
	}
	for i := range commands {
		c := &commands[i]
		var cc *fisk.CmdClause
		if group, word, two := strings.Cut(c.name, " "); two {
			cc = parents[group].Command(word, commandHelp(c))
		} else {
			cc = app.Command(c.name, commandHelp(c))
		}
		a.bindings[c.name] = &binding{cmd: cc}
		if err := c.run(ctx, a, c, nil); !errors.Is(err, errDeclared) {
			panic("memberctl: command " + c.name + " ran before parseArgs: " + fmt.Sprint(err))
		}
	}
	return app
}

// overview is the help of memberctl itself.
const overview = `Command-line client of the unibus membership service.

Global flags go before or after the command; each can be set through the environment variable shown
with it (flags win). 'memberctl help COMMAND' or 'memberctl COMMAND -h' shows one command.

Errors are one line on stderr, "memberctl: <op>: <code> <reason>: <message>", then a hint where one
helps (401: check --identity and the clock; 403: who may do this; 503: retry).

Exit codes:
  0  success
  1  the service answered with an error (4xx/5xx code on stderr)
  2  usage error: unknown command, bad flag or missing argument
  3  connection or local error: NATS unreachable or no service answering, identity file
     unreadable or readable by group/others, a file that exists, a key that cannot be opened

Quickstart:
  memberctl keygen --endpoint alice                     # alice.id (secret), alice.pub
  memberctl --identity admin.id identity register --pub alice.pub
  memberctl --identity alice.id room create ops --subject chat.ops --member bob
  memberctl --identity bob.id room key ops
  memberctl --identity alice.id room remove ops bob     # and rekeys

Completion: source <(memberctl completion bash), or zsh, or 'memberctl completion fish | source'.`

// usageTemplate is fisk's (kingpin's) default, with a command's own flags
// apart from the global ones, only the first line of each command's help
// in lists, and no list of arguments (the usage line names them).
const usageTemplate = `{{define "FormatCommand" -}}
{{if .FlagSummary}} {{.FlagSummary}}{{end -}}
{{range .Args}}{{if not .Hidden}} {{if not .Required}}[{{end}}{{if .PlaceHolder}}{{.PlaceHolder}}{{else}}<{{.Name}}>{{end}}{{if .Value|IsCumulative}}...{{end}}{{if not .Required}}]{{end}}{{end}}{{end -}}
{{end -}}

{{define "FormatCommands" -}}
{{range .FlattenedCommands -}}
{{if not .Hidden -}}
  {{.FullCommand}}{{template "FormatCommand" .}}
{{.Help|FirstLine|Wrap 4}}
{{end -}}
{{end -}}
{{end -}}

{{define "FormatUsage" -}}
{{template "FormatCommand" .}}{{if .Commands}} <command> [<args> ...]{{end}}
{{if .Help}}
{{.Help|Wrap 0 -}}
{{end -}}

{{end -}}

{{if .Context.SelectedCommand -}}
usage: {{.App.Name}} {{.Context.SelectedCommand}}{{template "FormatUsage" .Context.SelectedCommand}}
{{else -}}
usage: {{.App.Name}}{{template "FormatUsage" .App}}
{{end -}}
{{if .Context.SelectedCommand -}}
{{if .Context.SelectedCommand.Flags|VisibleFlags -}}
Flags:
{{.Context.SelectedCommand.Flags|FlagsToTwoColumns|FormatTwoColumns}}
{{end -}}
{{end -}}
{{if .Context.SelectedCommand -}}
{{if len .Context.SelectedCommand.Commands -}}
Subcommands:
{{template "FormatCommands" .Context.SelectedCommand}}
{{end -}}
{{else if .App.Commands -}}
Commands:
{{template "FormatCommands" .App}}
{{end -}}
{{if GlobalFlags .Context|VisibleFlags -}}
Global flags (before or after the command):
{{GlobalFlags .Context|FlagsToTwoColumns|FormatTwoColumns}}
{{end -}}
`

// commandHelp is a command's summary, then its details.
func commandHelp(c *command) string {
	h := upperFirst(c.summary) + "."
	if c.help != "" {
		h += "\n\n" + c.help
	}
	return h
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
