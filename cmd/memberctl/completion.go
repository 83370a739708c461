package main

import (
	"context"

	"github.com/unibus/membership/internal/cli"
)

// Registered in init: the script is generated from the command table, which
// would otherwise refer to itself.
func init() {
	commands = append(commands, command{name: "completion", args: "SHELL", run: completion,
		summary: "print the completion script of SHELL, bash, zsh or fish (commands, subcommands and every command's flags)",
		help: "bash: source <(memberctl completion bash)\n" +
			"zsh:  source <(memberctl completion zsh)\n" +
			"fish: memberctl completion fish | source\n" +
			"bash and zsh ask memberctl for the words as you type, as the nats CLI does; fish's script lists them."})
}

// completion prints the completion script of a shell.
func completion(_ context.Context, a *app, c *command, args []string) error {
	pos, err := a.parseArgs(newFlagSet(c.name), c, args, 1, 1)
	if err != nil {
		return err
	}
	if err := cli.CompletionScript(a.fisk, pos[0], a.stdout); err != nil {
		return usagef("completion: %v", err)
	}
	return nil
}
