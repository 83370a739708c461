package main

import (
	"context"
	"encoding/hex"
	"io"
	"strconv"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/subjects"
)

type auditEntryJSON struct {
	Seq         uint64 `json:"seq"`
	Time        string `json:"time"`
	Op          string `json:"op"`
	Actor       string `json:"actor"`
	ActorKey    string `json:"actor_key"`
	Target      string `json:"target,omitempty"`
	Epoch       uint64 `json:"epoch"`
	RequestHash string `json:"request_hash"`
	Hash        string `json:"hash"`
}

type auditJSON struct {
	Room       string           `json:"room,omitempty"`
	Chain      string           `json:"chain"`
	ServiceKey string           `json:"service_key"`
	Verified   bool             `json:"verified"`
	Problem    string           `json:"problem,omitempty"`
	Entries    []auditEntryJSON `json:"entries"`
}

// audit prints a room's audit trail (or, with --identities, the identity
// registry's) and verifies it: the chain's links and every entry's
// signature under the pinned service key (or a key it rotated from), and
// that the trail still reaches the last head verified before from this
// identity's directory (rollback.go). A trail that does not verify is
// printed (so it can be inspected) and the command fails.
func audit(ctx context.Context, a *app, c *command, args []string) error {
	fset := newFlagSet(c.name)
	identities := fset.Bool("identities", false, "the identity registry's chain instead of a room's (admins)")
	pos, err := a.parseArgs(fset, c, args, 0, 1)
	if err != nil {
		return err
	}
	if *identities == (len(pos) == 1) {
		return usagef("audit: give a ROOM or --identities\nusage: memberctl %s %s", c.name, c.args)
	}
	if a.g.noVerify {
		return usagef("audit: the trail is verified against the service key; it cannot run with --insecure-no-verify")
	}
	cl, err := a.client()
	if err != nil {
		return err
	}
	v, entries, err := a.fetchChain(ctx, cl, pos, *identities)
	if err != nil {
		return err
	}
	verr := client.VerifyChain(a.trustedKeys(cl), v.Chain, entries)
	if verr == nil {
		verr = a.checkRollback(v.Chain, entries)
	}
	v.ServiceKey, v.Verified = cl.ServiceKey(), verr == nil
	if verr != nil {
		v.Problem = verr.Error()
	}
	for i := range entries {
		e := &entries[i]
		h := e.Hash()
		v.Entries = append(v.Entries, auditEntryJSON{Seq: e.Seq, Time: timeText(millis(e.Time)), Op: e.Op, Actor: e.Actor,
			ActorKey: e.ActorKey, Target: e.Target, Epoch: e.Epoch, RequestHash: hex.EncodeToString(e.RequestHash), Hash: hex.EncodeToString(h[:])})
	}
	if err := a.output(v, func(w io.Writer) { auditText(w, v) }); err != nil {
		return err
	}
	if verr != nil {
		return &cmdError{op: "verify audit of " + v.Chain, err: verr,
			hint: "the stored trail was altered, truncated or rolled back, or not signed by the service key; keep this output as evidence"}
	}
	return nil
}

// fetchChain reads a room's trail or the identities chain.
func (a *app) fetchChain(ctx context.Context, cl *client.Client, pos []string, identities bool) (auditJSON, []api.AuditEntry, error) {
	if identities {
		entries, err := cl.IdentityAudit(ctx)
		v := auditJSON{Chain: api.IdentitiesChain, Entries: make([]auditEntryJSON, 0, len(entries))}
		return v, entries, opErr(subjects.OpIdentityAudit, err)
	}
	entries, err := cl.Audit(ctx, pos[0])
	v := auditJSON{Room: pos[0], Chain: api.RoomChain(pos[0]), Entries: make([]auditEntryJSON, 0, len(entries))}
	return v, entries, opErr(subjects.OpRoomAudit, err)
}

func auditText(w io.Writer, v auditJSON) {
	rows := [][]string{{"SEQ", "TIME", "OP", "ACTOR", "TARGET", "EPOCH"}}
	for _, e := range v.Entries {
		rows = append(rows, []string{strconv.FormatUint(e.Seq, 10), e.Time, e.Op, e.Actor, e.Target, strconv.FormatUint(e.Epoch, 10)})
	}
	table(w, rows)
	if v.Verified {
		fields(w, "chain", "verified: "+strconv.Itoa(len(v.Entries))+" entries linked and signed by "+v.ServiceKey)
	} else {
		fields(w, "chain", "NOT VERIFIED")
	}
}
