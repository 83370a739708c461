package cli

import (
	"bytes"
	"strings"
	"testing"
)

// TestSuggest checks the nearest command or flag of the context is
// suggested, and nothing for a word too far from every candidate.
func TestSuggest(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"romo"}, "room"},
		{[]string{"room", "crate"}, "create"},
		{[]string{"room", "create", "--subjet"}, "--subject"},
		{[]string{"--tiemout", "1s", "room"}, "--timeout"},
		{[]string{"room", "--zzzzzz"}, ""},
		{[]string{"xyz"}, ""},
	} {
		var out bytes.Buffer
		app := New("demo", "a demo", &out, &out)
		app.Flag("timeout", "").String()
		app.Command("room", "rooms").Command("create", "make one").Flag("subject", "").String()
		app.Command("other", "").Flag("subjects-other", "").String()
		_, done, _, err := Parse(app, tc.args)
		if done || err == nil {
			t.Fatalf("%v: parsed", tc.args)
		}
		got := Suggest(app, tc.args, err)
		if got != tc.want {
			t.Errorf("%v: suggestion %q, want %q (%v)", tc.args, got, tc.want, err)
		}
	}
}

// TestParseHelpAndVersion checks that help and --version end parsing with
// exit 0 and write to stdout.
func TestParseHelpAndVersion(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}, {"room", "-h"}, {"help", "room"}, {"--version"}} {
		var stdout, stderr bytes.Buffer
		app := New("demo", "a demo", &stdout, &stderr)
		app.Command("room", "rooms").Command("create", "make one")
		_, done, code, err := Parse(app, args)
		if !done || code != 0 || err != nil || stdout.Len() == 0 || stderr.Len() != 0 {
			t.Errorf("%v: done %v code %d err %v stdout %q stderr %q", args, done, code, err, stdout.String(), stderr.String())
		}
	}
}

// TestFishFlag checks --completion-script-fish prints the script and ends
// parsing with exit 0.
func TestFishFlag(t *testing.T) {
	var stdout bytes.Buffer
	app := New("demo", "", &stdout, &bytes.Buffer{})
	app.Flag("wait", "how long").Duration()
	_, done, code, err := Parse(app, []string{"--completion-script-fish"})
	if !done || code != 0 || err != nil || !strings.Contains(stdout.String(), "complete -c demo -l wait -r -F -d 'how long'") {
		t.Fatalf("done %v code %d err %v\n%s", done, code, err, stdout.String())
	}
}

// TestCheckEnv checks a bad environment value is named by its variable.
func TestCheckEnv(t *testing.T) {
	t.Setenv("DEMO_WAIT", "soon")
	app := New("demo", "", &bytes.Buffer{}, &bytes.Buffer{})
	app.Flag("wait", "").Envar("DEMO_WAIT").Duration()
	if err := CheckEnv(app); err == nil || !strings.HasPrefix(err.Error(), `DEMO_WAIT="soon": `) {
		t.Fatalf("CheckEnv = %v", err)
	}
}

// TestFishCompletion checks the script completes commands under their
// parents and each command's flags, with quotes escaped.
func TestFishCompletion(t *testing.T) {
	app := New("demo", "", &bytes.Buffer{}, &bytes.Buffer{})
	app.Flag("json", "it's JSON").Bool()
	app.Command("room", "rooms").Command("create", "make one").Flag("subject", "the subject").String()
	got := FishCompletion(app)
	for _, want := range []string{
		`complete -c demo -l json -d 'it\'s JSON'`,
		`complete -c demo -n 'not __fish_seen_subcommand_from room' -a room -d 'rooms'`,
		`complete -c demo -n '__fish_seen_subcommand_from room; and not __fish_seen_subcommand_from create' -a create -d 'make one'`,
		`complete -c demo -n '__fish_seen_subcommand_from create' -l subject -r -F -d 'the subject'`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("fish script lacks %s\n%s", want, got)
		}
	}
}
