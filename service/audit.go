package service

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/store"
)

// The audit trail lives in the state bucket itself: every accepted mutation
// adds its entry and moves its chain's head in the SAME atomic batch as the
// state change and the nonce claim. So an entry exists if and only if the
// mutation committed — no mutation without its entry, no entry for a
// mutation that failed — and the head's compare-and-set keeps each chain
// linear across replicas (two concurrent mutations of one room cannot both
// append entry n; the loser re-plans like any other conflict).
//
// Key space: audit.<chain>.<seq> (seq zero-padded, so keys sort in order)
// and audithead.<chain>, where chain is [api.RoomChain] or
// [api.IdentitiesChain] (no two chains share a prefix).
func keyAuditEntry(chain string, seq uint64) string {
	return fmt.Sprintf("audit.%s.%012d", chain, seq)
}
func prefixAudit(chain string) string  { return "audit." + chain + "." }
func keyAuditHead(chain string) string { return "audithead." + chain }

// auditHead is a chain's head: the last entry's sequence and hash.
type auditHead struct {
	Seq  uint64 `msgpack:"seq"`
	Hash []byte `msgpack:"hash"`
}

// auditTarget is what a mutation's audit entry names: its chain and, for a
// room, the room and the epoch it is at after the mutation; target is the
// endpoint acted on, if any. The operation that acted fills it in, from
// its own strictly decoded request, never a second decode of the body: a
// second, lenient decoder could read another target than the one acted on.
type auditTarget struct {
	chain  string
	room   string
	epoch  uint64
	target string
}

// roomTarget names room r's chain, at r's epoch, and the endpoint acted on
// (empty if none).
func roomTarget(r *api.Room, endpoint string) auditTarget {
	return auditTarget{chain: api.RoomChain(r.ID), room: r.ID, epoch: r.Epoch, target: endpoint}
}

// identityTarget names the identities chain and the identity acted on.
func identityTarget(endpoint string) auditTarget {
	return auditTarget{chain: api.IdentitiesChain, target: endpoint}
}

// auditWrites plans m's audit entry: the entry and the head move, to be
// committed in m's batch.
func (s *Service) auditWrites(ctx context.Context, c *call, m *mutation) ([]store.Write, error) {
	a := m.audit
	if a.chain == "" {
		return nil, s.internal(c, "audit", fmt.Errorf("operation %s planned a mutation without an audit chain", c.op))
	}
	e := api.AuditEntry{Op: string(c.op), Time: c.now.UnixMilli(), RequestHash: c.digest[:], ServiceKey: s.pub,
		Chain: a.chain, Room: a.room, Epoch: a.epoch, Target: a.target}
	if c.signer != nil {
		e.Actor, e.ActorKey = c.signer.Endpoint, c.signer.SignKey
	}
	var head auditHead
	headRev, _, err := s.get(ctx, c, keyAuditHead(e.Chain), &head)
	if err != nil {
		return nil, err
	}
	e.Seq = head.Seq + 1
	e.Prev = head.Hash
	if e.Prev == nil {
		e.Prev = make([]byte, 32)
	}
	h := e.Hash()
	if e.Sig, err = s.signer.Sign(h[:]); err != nil {
		return nil, s.internal(c, "sign audit entry", err)
	}
	return []store.Write{
		put(keyAuditEntry(e.Chain, e.Seq), 0, &e),
		put(keyAuditHead(e.Chain), headRev, &auditHead{Seq: e.Seq, Hash: h[:]}),
	}, nil
}

// roomAudit serves a page of a room's audit entries to its members only
// (H3), in chain order. Entries are returned as stored; the client checks
// the chain and the signatures itself.
func (s *Service) roomAudit(ctx context.Context, c *call) (any, error) {
	var req api.AuditRequest
	if err := c.body(&req); err != nil {
		return nil, err
	}
	if _, _, _, err := s.roomFor(ctx, c, req.Room); err != nil {
		return nil, err
	}
	return s.auditPage(ctx, c, api.RoomChain(req.Room), req.After, req.Limit)
}

// identityAudit serves a page of the identities chain (register, disable,
// enable) to admins only: it names every identity and its keys' changes.
func (s *Service) identityAudit(ctx context.Context, c *call) (any, error) {
	var req api.IdentityAuditRequest
	if err := c.body(&req); err != nil {
		return nil, err
	}
	return s.auditPage(ctx, c, api.IdentitiesChain, req.After, req.Limit)
}

// auditPage reads the entries of chain with seq > after, at most limit.
func (s *Service) auditPage(ctx context.Context, c *call, chain string, after uint64, reqLimit int) (any, error) {
	limit, err := api.PageLimit(reqLimit)
	if err != nil {
		return nil, err
	}
	prefix := prefixAudit(chain)
	keys, err := s.listKeys(ctx, prefix)
	if err != nil {
		return nil, s.storeErr(c, "list audit", err)
	}
	var seqs []uint64
	for _, k := range keys {
		n, err := strconv.ParseUint(strings.TrimPrefix(k, prefix), 10, 64)
		if err == nil && n > after {
			seqs = append(seqs, n)
		}
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	out := &api.AuditPage{Entries: make([]api.AuditEntry, 0, min(len(seqs), limit))}
	if len(seqs) > limit {
		seqs, out.Next = seqs[:limit], seqs[limit-1]
	}
	for _, n := range seqs {
		var e api.AuditEntry
		ent, err := s.shardOf(c, keyAuditEntry(chain, n)).Get(ctx, keyAuditEntry(chain, n))
		if err != nil {
			return nil, s.storeErr(c, "get audit", err)
		}
		if !ent.Exists() {
			continue
		}
		// A stored entry that no longer decodes is handed on as an empty
		// entry with its sequence: the reader's chain check then reports
		// the break instead of the service hiding it.
		if err := msgpack.Unmarshal(ent.Value, &e); err != nil {
			e = api.AuditEntry{Seq: n}
		}
		out.Entries = append(out.Entries, e)
	}
	return out, nil
}
