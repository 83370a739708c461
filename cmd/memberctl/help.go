package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/unibus/membership/subjects"
)

// command is one memberctl command.
type command struct {
	name    string // one or two words: "whoami", "room create"
	args    string // synopsis of its arguments
	summary string // one line
	help    string // more detail for `memberctl help <command>`
	run     func(ctx context.Context, a *app, c *command, args []string) error
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

const globalHelp = `Global flags (before or after the command; flags win over the environment):
  -s, --server URL   NATS server URLs, comma separated (env NATS_URL)
  --context NAME     nats CLI context (env NATS_CONTEXT); the options below override it. With no
                     connection option at all, the context chosen with 'nats context select' is
                     used, else nats://127.0.0.1:4222
  --user U, --password P, --token T   NATS user and password, or token (env NATS_USER,
                     NATS_PASSWORD, NATS_TOKEN)
  --creds FILE       NATS user credentials file (env NATS_CREDS)
  --nkey FILE        NATS user nkey seed file (env NATS_NKEY)
  --inbox-prefix P   reply inbox prefix the NATS user may subscribe to (env NATS_INBOX_PREFIX)
  --tlscert FILE, --tlskey FILE, --tlsca FILE   client certificate and key, CA to verify the
                     servers with (env NATS_CERT, NATS_KEY, NATS_CA)
  --identity FILE    identity file written by keygen; signs every request (env MEMBERCTL_IDENTITY;
                     default ~/.config/unibus/identity.id if it exists)
  --prefix PREFIX    subject prefix of the service (env MEMBERCTL_PREFIX; default ` + subjects.DefaultPrefix + `)
  --timeout DUR      wait for each reply; a request that times out is resent up to 3 times
                     (env MEMBERCTL_TIMEOUT; default 5s)
  --json             machine output: one JSON document on stdout, snake_case field names
  --bus              connect with the identity's signing key and its own inbox prefix, as a bus
                     that enforces membership requires (membershipd --bus enforce; docs/deploy.md)
  --service-key N…   the service's public key: every reply must be signed by it (env
                     MEMBERCTL_SERVICE_KEY). Without it the key of the first verified reply is
                     trusted and stored in known_services.json beside the identity file, per
                     server set and prefix; a later key is accepted only through a rotation
                     statement signed by the stored one, or by giving it here
  --insecure-no-verify  do not verify replies (env MEMBERCTL_INSECURE_NO_VERIFY=1); said on stderr
  --version          print the build's version and exit (before the command)
`

const exitHelp = `Errors are one line on stderr, "memberctl: <op>: <code> <reason>: <message>", then a hint
where one helps (401: check --identity and the clock; 403: who may do this; 503: retry).

Exit codes:
  0  success
  1  the service answered with an error (4xx/5xx code on stderr)
  2  usage error: unknown command, bad flag or missing argument
  3  connection or local error: NATS unreachable or no service answering, identity file
     unreadable or readable by group/others, a file that exists, a key that cannot be opened
`

// help prints the overview of every command.
func (a *app) help(w io.Writer) {
	if w == nil {
		w = a.stdout
	}
	fmt.Fprint(w, "memberctl: command-line client of the unibus membership service.\n\n")
	fmt.Fprint(w, "Usage: memberctl [global flags] <command> [arguments] [flags]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %s\n      %s\n", strings.TrimSpace(c.name+" "+c.args), c.summary)
	}
	fmt.Fprint(w, "  help [COMMAND]\n      this text, or one command's (also: memberctl COMMAND -h)\n")
	fmt.Fprint(w, "\n"+globalHelp+"\n"+exitHelp)
	fmt.Fprint(w, `
Quickstart:
  memberctl keygen --endpoint alice                     # alice.id (secret), alice.pub
  memberctl --identity admin.id identity register --pub alice.pub
  memberctl --identity alice.id room create ops --subject chat.ops --member bob
  memberctl --identity bob.id room key ops
  memberctl --identity alice.id room remove ops bob     # and rekeys
`)
}

// helpCommand serves `memberctl help [COMMAND]`.
func (a *app) helpCommand(args []string) error {
	if len(args) == 0 {
		a.help(nil)
		return nil
	}
	name := strings.Join(args, " ")
	for i := range commands {
		if commands[i].name == name {
			a.commandHelp(a.stdout, &commands[i])
			return nil
		}
	}
	if list, ok := groups[name]; ok {
		fmt.Fprintf(a.stdout, "memberctl %s <subcommand>: %s\n\n", name, list)
		for _, c := range commands {
			if strings.HasPrefix(c.name, name+" ") {
				fmt.Fprintf(a.stdout, "  %s %s\n      %s\n", c.name, c.args, c.summary)
			}
		}
		return nil
	}
	return usagef("unknown command %q", name)
}

// commandHelp prints one command's help.
func (a *app) commandHelp(w io.Writer, c *command) {
	fmt.Fprintf(w, "Usage: memberctl [global flags] %s\n\n%s.\n", strings.TrimSpace(c.name+" "+c.args), upperFirst(c.summary))
	if c.help != "" {
		fmt.Fprintf(w, "\n%s\n", c.help)
	}
	fmt.Fprint(w, "\n"+globalHelp)
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
