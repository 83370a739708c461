package main

import (
	"fmt"
	"os"

	"golang.org/x/term"
)

// progress returns the client's progress hook: a line on stderr that
// rewrites itself, only when stderr is a terminal (never in pipes, files or
// --json consumers' logs).
func (a *app) progress() func(stage string, done, total int) {
	f, ok := a.stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return func(stage string, done, total int) {
		if total > 0 {
			fmt.Fprintf(f, "\r\033[K%s: %d/%d", stage, done, total)
		} else {
			fmt.Fprintf(f, "\r\033[K%s: %d", stage, done)
		}
		a.progressShown = true
	}
}

// endProgress clears the progress line before the result is printed.
func (a *app) endProgress() {
	if a.progressShown {
		fmt.Fprint(a.stderr, "\r\033[K")
		a.progressShown = false
	}
}
