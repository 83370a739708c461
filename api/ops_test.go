package api_test

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/subjects"
)

// microName is what nats.go micro accepts as an endpoint name.
var microName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// TestOps: every row of the operation table has a distinct op, a valid
// micro endpoint name and subject, struct body types and a description.
func TestOps(t *testing.T) {
	if len(api.Ops) == 0 {
		t.Fatal("no ops")
	}
	names := map[string]subjects.Op{}
	subs := map[string]bool{}
	for _, o := range api.Ops {
		name := o.Op.EndpointName()
		if !microName.MatchString(name) {
			t.Errorf("op %q: endpoint name %q is not a valid micro name", o.Op, name)
		}
		if other, ok := names[name]; ok {
			t.Errorf("ops %q and %q share endpoint name %q", o.Op, other, name)
		}
		names[name] = o.Op
		sub := subjects.Subject(subjects.DefaultPrefix, o.Op)
		if err := subjects.ValidateSubject(sub); err != nil {
			t.Errorf("op %q: subject %q: %v", o.Op, sub, err)
		}
		if subs[sub] {
			t.Errorf("subject %q twice", sub)
		}
		subs[sub] = true
		for _, v := range []any{o.Request, o.Reply} {
			if reflect.TypeOf(v).Kind() != reflect.Struct {
				t.Errorf("op %q: body type %T is not a struct", o.Op, v)
			}
		}
		if o.Description == "" {
			t.Errorf("op %q has no description", o.Op)
		}
		if spec, ok := api.Spec(o.Op); !ok || spec.Op != o.Op || api.Mutates(o.Op) != o.Mutates {
			t.Errorf("Spec(%q) = %+v, %t; Mutates = %t", o.Op, spec, ok, api.Mutates(o.Op))
		}
	}
	if _, ok := api.Spec("room.nope"); ok || api.Mutates("room.nope") {
		t.Error("an unknown op has a row")
	}
}

// TestOpsMatchProtocolDoc: docs/protocol.md lists the operations twice, as
// the §10 table (op, body → reply, in registration order) and as §9's lists
// of mutations and reads; both say what the table says.
func TestOpsMatchProtocolDoc(t *testing.T) {
	b, err := os.ReadFile("../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	row := regexp.MustCompile("(?m)^\\| `([a-z.]+)` \\| (\\w+) → (\\w+) \\|")
	var got, want []string
	for _, m := range row.FindAllStringSubmatch(section(t, doc, "## 10. "), -1) {
		got = append(got, m[1]+" "+m[2]+" → "+m[3])
	}
	for _, o := range api.Ops {
		want = append(want, string(o.Op)+" "+reflect.TypeOf(o.Request).Name()+" → "+reflect.TypeOf(o.Reply).Name())
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("§10 table:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	nonces := section(t, doc, "## 9. ")
	for _, o := range api.Ops {
		list := "**Reads**"
		if o.Mutates {
			list = "**Mutations**"
		}
		_, item, _ := strings.Cut(nonces, list)
		item, _, _ = strings.Cut(item, "):")
		if !strings.Contains(item, "`"+string(o.Op)+"`") {
			t.Errorf("§9: %s is not listed under %s", o.Op, list)
		}
	}
}

// section returns doc's section that starts with heading, up to the next
// second-level heading.
func section(t *testing.T, doc, heading string) string {
	t.Helper()
	i := strings.Index(doc, "\n"+heading)
	if i < 0 {
		t.Fatalf("docs/protocol.md has no %q", heading)
	}
	s := doc[i+1:]
	if j := strings.Index(s[1:], "\n## "); j >= 0 {
		s = s[:j+1]
	}
	return s
}
