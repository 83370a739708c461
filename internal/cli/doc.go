// Package cli builds memberctl's and membershipd's command lines on
// github.com/choria-io/fisk, the framework of the nats CLI: help on stdout
// with -h/--help at every level, --version from the build info, bash and
// zsh completion from fisk, fish completion from the same model, and a
// suggestion when a command or flag is misspelt.
//
// memberctl and membershipd build their applications with [New] and parse
// with [Parse], which turns fisk's exits (after help, --version or a
// completion script) into a result the program returns, so that run
// functions stay testable in-process.
package cli
