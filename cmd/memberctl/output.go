package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/unibus/membership/api"
)

// JSON shapes: stable snake_case names, independent of the wire types.

type identityJSON struct {
	Endpoint string    `json:"endpoint"`
	SignKey  string    `json:"sign_key"`
	XKey     string    `json:"xkey"`
	Admin    bool      `json:"admin"`
	Disabled bool      `json:"disabled"`
	Created  time.Time `json:"created,omitzero"`
	Updated  time.Time `json:"updated,omitzero"`
}

type publicKeysJSON struct {
	Endpoint string `json:"endpoint"`
	SignKey  string `json:"sign_key"`
	XKey     string `json:"xkey"`
	Disabled bool   `json:"disabled"`
}

type identityPageJSON struct {
	Identities []identityJSON `json:"identities"`
	Next       string         `json:"next"`
}

type roomJSON struct {
	ID        string    `json:"id"`
	Subject   string    `json:"subject"`
	Owner     string    `json:"owner"`
	OwnerKey  string    `json:"owner_key"`
	Epoch     uint64    `json:"epoch"`
	RekeyOwed bool      `json:"rekey_owed"`
	Members   int       `json:"members"`
	Deleted   bool      `json:"deleted"`
	Created   time.Time `json:"created,omitzero"`
	Updated   time.Time `json:"updated,omitzero"`
}

type roomPageJSON struct {
	Rooms []roomJSON `json:"rooms"`
	Next  string     `json:"next"`
}

type memberJSON struct {
	Endpoint string `json:"endpoint"`
	SignKey  string `json:"sign_key"`
	XKey     string `json:"xkey"`
	Since    uint64 `json:"since"`
}

type membersJSON struct {
	Room    string       `json:"room"`
	Members []memberJSON `json:"members"`
	Next    string       `json:"next"`
}

type keyJSON struct {
	Room  string `json:"room"`
	Epoch uint64 `json:"epoch"`
	Key   string `json:"key"`
}

type removeJSON struct {
	Removed string   `json:"removed"`
	Rekeyed bool     `json:"rekeyed"`
	Room    roomJSON `json:"room"`
}

type keygenJSON struct {
	Endpoint        string `json:"endpoint"`
	SignKey         string `json:"sign_key"`
	XKey            string `json:"xkey"`
	IdentityFile    string `json:"identity_file"`
	PubFile         string `json:"pub_file"`
	RegisterCommand string `json:"register_command"`
}

func millis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

func toIdentity(id *api.Identity) identityJSON {
	return identityJSON{Endpoint: id.Endpoint, SignKey: id.SignKey, XKey: id.XKey, Admin: id.Admin,
		Disabled: id.Disabled, Created: millis(id.Created), Updated: millis(id.Updated)}
}

func toRoom(r *api.Room) roomJSON {
	return roomJSON{ID: r.ID, Subject: r.Subject, Owner: r.Owner, OwnerKey: r.OwnerKey, Epoch: r.Epoch,
		RekeyOwed: r.RekeyOwed, Members: r.Members, Deleted: r.Deleted, Created: millis(r.Created), Updated: millis(r.Updated)}
}

func toMembers(room string, ms []api.Member, next string) membersJSON {
	out := membersJSON{Room: room, Members: make([]memberJSON, 0, len(ms)), Next: next}
	for _, m := range ms {
		out.Members = append(out.Members, memberJSON{Endpoint: m.Endpoint, SignKey: m.SignKey, XKey: m.XKey, Since: m.Since})
	}
	return out
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes aligned columns.
func table(w io.Writer, rows [][]string) {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	for _, r := range rows {
		for i, c := range r {
			if i > 0 {
				fmt.Fprint(tw, "\t")
			}
			fmt.Fprint(tw, c)
		}
		fmt.Fprint(tw, "\n")
	}
	tw.Flush()
}

// fields writes "name:  value" lines, aligned.
func fields(w io.Writer, kv ...string) {
	rows := make([][]string, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		rows = append(rows, []string{kv[i] + ":", kv[i+1]})
	}
	table(w, rows)
}

func timeText(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(time.RFC3339)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func identityText(w io.Writer, id identityJSON) {
	fields(w, "endpoint", id.Endpoint, "sign-key", id.SignKey, "xkey", id.XKey,
		"admin", yesNo(id.Admin), "disabled", yesNo(id.Disabled),
		"created", timeText(id.Created), "updated", timeText(id.Updated))
}

func roomText(w io.Writer, r roomJSON) {
	kv := []string{"room", r.ID, "subject", r.Subject, "owner", r.Owner, "epoch", strconv.FormatUint(r.Epoch, 10),
		"members", strconv.Itoa(r.Members), "rekey owed", yesNo(r.RekeyOwed)}
	if r.Deleted {
		kv = append(kv, "deleted", "yes")
	}
	kv = append(kv, "created", timeText(r.Created), "updated", timeText(r.Updated))
	fields(w, kv...)
}

func nextText(w io.Writer, next string) {
	if next != "" {
		fmt.Fprintf(w, "more: --after %s\n", next)
	}
}
