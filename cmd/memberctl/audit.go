package main

import (
	"context"
	"encoding/hex"
	"io"
	"os"
	"strconv"

	"github.com/unibus/membership/client"
	"github.com/unibus/membership/subjects"
)

// envServiceKey pins the service's public key for commands that verify
// what the service signed.
const envServiceKey = "MEMBERCTL_SERVICE_KEY"

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
	Room       string           `json:"room"`
	ServiceKey string           `json:"service_key"`
	Verified   bool             `json:"verified"`
	Problem    string           `json:"problem,omitempty"`
	Entries    []auditEntryJSON `json:"entries"`
}

// audit prints a room's audit trail and verifies it: the chain's links and
// every entry's signature under the pinned service key. A trail that does
// not verify is printed (so it can be inspected) and the command fails.
func audit(ctx context.Context, a *app, c *command, args []string) error {
	fset := newFlagSet(c.name)
	a.g.register(fset)
	key := fset.String("service-key", os.Getenv(envServiceKey), "")
	pos, err := a.parseArgs(fset, c, args, 1, 1)
	if err != nil {
		return err
	}
	if *key == "" {
		return usagef("audit: --service-key N… (or %s) is required: the trail is verified against it.\n"+
			"Take it from the operator (membershipd's ready log, or service_key in `nats micro info %s`)",
			envServiceKey, subjects.ServiceName)
	}
	cl, err := a.client()
	if err != nil {
		return err
	}
	// Replies too must come from the pinned service.
	cl = client.New(a.nc, cl.Identity(), client.WithPrefix(a.g.prefix), client.WithTimeout(a.g.timeout), client.WithServiceKey(*key))
	entries, err := cl.Audit(ctx, pos[0])
	if err != nil {
		return opErr(subjects.OpRoomAudit, err)
	}
	verr := client.VerifyAudit(*key, pos[0], entries)
	v := auditJSON{Room: pos[0], ServiceKey: *key, Verified: verr == nil, Entries: make([]auditEntryJSON, 0, len(entries))}
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
		return &cmdError{op: "verify audit of " + pos[0], err: verr,
			hint: "the stored trail was altered, truncated in the middle or not signed by this key; keep this output as evidence"}
	}
	return nil
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
