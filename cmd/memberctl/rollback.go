package main

import (
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/unibus/membership/api"
)

// errRollback reports an audit trail that no longer reaches a head this
// identity's directory verified before: the store was rolled back, its
// tail truncated, or history rewritten.
var errRollback = errors.New("audit trail rolled back")

// checkRollback compares a verified chain with the last head remembered for
// it and, if the chain still holds that head, remembers the new one. A
// chain can only grow: a shorter one, or one whose entry at the remembered
// sequence has another hash, is reported.
func (a *app) checkRollback(chain string, entries []api.AuditEntry) error {
	if a.pins == nil {
		return nil
	}
	e := a.pins.entry()
	if e == nil {
		return nil
	}
	if last, ok := e.Audit[chain]; ok {
		if uint64(len(entries)) < last.Seq {
			return fmt.Errorf("%w: the trail ends at entry %d, but entry %d (hash %s) was verified before: a rollback or a truncated tail",
				errRollback, len(entries), last.Seq, last.Hash)
		}
		if h := entries[last.Seq-1].Hash(); hex.EncodeToString(h[:]) != last.Hash {
			return fmt.Errorf("%w: entry %d has hash %x, but %s was verified before: history was rewritten",
				errRollback, last.Seq, h, last.Hash)
		}
	}
	if len(entries) == 0 {
		return nil
	}
	h := entries[len(entries)-1].Hash()
	if e.Audit == nil {
		e.Audit = map[string]auditHead{}
	}
	e.Audit[chain] = auditHead{Seq: uint64(len(entries)), Hash: hex.EncodeToString(h[:])}
	if err := a.pins.save(); err != nil {
		a.note("could not remember the audit head of %s in %s: %v", chain, a.pins.path, err)
	}
	return nil
}
