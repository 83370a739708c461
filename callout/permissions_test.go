package callout_test

import (
	"io"
	"log/slog"
	"slices"
	"testing"

	"github.com/nats-io/jwt/v2"

	"github.com/unibus/membership/callout"
)

// TestPermissions pins what an endpoint is granted (docs/protocol.md, "The
// bus enforces membership"), and that a room subject that could reach the
// service, an inbox or the system account is never granted.
func TestPermissions(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := callout.Permissions("unibus.membership.v1", "bob",
		[]string{"chat.r1", "unibus.membership.v1.room.add", "$SYS.REQ.SERVER.PING", "_INBOX_alice", "unibus.membership.v1"}, log)
	want := jwt.Permissions{
		Pub: jwt.Permission{Allow: jwt.StringList{"chat.r1", "chat.r1.>", "unibus.membership.v1.>", "$SRV.>"}},
		Sub: jwt.Permission{Allow: jwt.StringList{"chat.r1", "chat.r1.>", "_INBOX_bob.>"}},
	}
	if !slices.Equal(p.Pub.Allow, want.Pub.Allow) || !slices.Equal(p.Sub.Allow, want.Sub.Allow) ||
		len(p.Pub.Deny)+len(p.Sub.Deny) != 0 {
		t.Fatalf("permissions\n got pub %q sub %q\nwant pub %q sub %q", p.Pub.Allow, p.Sub.Allow, want.Pub.Allow, want.Sub.Allow)
	}
	if p.Resp == nil || p.Resp.MaxMsgs != 1 {
		t.Fatalf("responses %+v: want one reply per request received", p.Resp)
	}
	// A subject two rooms share is granted once.
	p = callout.Permissions("unibus.membership.v1", "bob", []string{"b.r", "a.r", "b.r"}, log)
	if !slices.Equal(p.Pub.Allow, jwt.StringList{"a.r", "a.r.>", "b.r", "b.r.>", "unibus.membership.v1.>", "$SRV.>"}) ||
		!slices.Equal(p.Sub.Allow, jwt.StringList{"a.r", "a.r.>", "b.r", "b.r.>", "_INBOX_bob.>"}) {
		t.Fatalf("shared subject: pub %q sub %q", p.Pub.Allow, p.Sub.Allow)
	}
	// With no room, an endpoint still only reaches the service and its inbox.
	p = callout.Permissions("unibus.membership.v1", "carol", nil, log)
	if !slices.Equal(p.Sub.Allow, jwt.StringList{"_INBOX_carol.>"}) {
		t.Fatalf("no rooms: sub %q", p.Sub.Allow)
	}
}

func TestParseMode(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{{"off", true}, {"observe", true}, {"enforce", true}, {"soft", false}, {"", false}, {"Enforce", false}} {
		if _, err := callout.ParseMode(tc.in); (err == nil) != tc.ok {
			t.Errorf("ParseMode(%q): %v", tc.in, err)
		}
	}
}
