package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/envelope"
	"github.com/unibus/membership/subjects"
)

// ErrAuditChain reports an audit trail that does not verify: an entry was
// altered, removed, reordered or not signed by the service key.
var ErrAuditChain = errors.New("client: audit chain does not verify")

// AuditPage returns one page of a room's audit entries with Seq > after
// (members only). The entries are as stored; check them with [VerifyAudit].
func (c *Client) AuditPage(ctx context.Context, room string, after uint64, limit int) (*api.AuditPage, error) {
	return call[api.AuditPage](ctx, c, subjects.OpRoomAudit, &api.AuditRequest{Room: room, After: after, Limit: limit})
}

// Audit returns a room's whole audit trail, page by page.
func (c *Client) Audit(ctx context.Context, room string) ([]api.AuditEntry, error) {
	var all []api.AuditEntry
	var after uint64
	for {
		p, err := c.AuditPage(ctx, room, after, api.MaxPage)
		if err != nil {
			return nil, err
		}
		all = append(all, p.Entries...)
		if p.Next == 0 {
			return all, nil
		}
		after = p.Next
	}
}

// IdentityAuditPage returns one page of the identities chain (admins
// only): every register, disable and enable, as stored.
func (c *Client) IdentityAuditPage(ctx context.Context, after uint64, limit int) (*api.AuditPage, error) {
	return call[api.AuditPage](ctx, c, subjects.OpIdentityAudit, &api.IdentityAuditRequest{After: after, Limit: limit})
}

// IdentityAudit returns the whole identities chain, page by page.
func (c *Client) IdentityAudit(ctx context.Context) ([]api.AuditEntry, error) {
	var all []api.AuditEntry
	var after uint64
	for {
		p, err := c.IdentityAuditPage(ctx, after, api.MaxPage)
		if err != nil {
			return nil, err
		}
		all = append(all, p.Entries...)
		if p.Next == 0 {
			return all, nil
		}
		after = p.Next
	}
}

// VerifyAudit checks a room's complete audit trail against the service's
// public key (N…): entries numbered 1, 2, 3 … without a gap, all of the
// room's chain, each linked to the hash of the one before, each signed by
// the service. It names the first entry that fails.
func VerifyAudit(servicePub, room string, entries []api.AuditEntry) error {
	return VerifyChain([]string{servicePub}, api.RoomChain(room), entries)
}

// VerifyChain checks a complete audit chain ([api.RoomChain] or
// [api.IdentitiesChain])
// like [VerifyAudit], accepting a signature by any of keys: the pinned
// service key and the keys it rotated from (an entry keeps the signature
// of the key that was current when it was written).
func VerifyChain(keys []string, chain string, entries []api.AuditEntry) error {
	var kps []nkeys.KeyPair
	for _, k := range keys {
		kp, err := nkeys.FromPublicKey(k)
		if err != nil || !envelope.IsServerKey(k) {
			return fmt.Errorf("%w: %q is not an nkeys server public key", ErrAuditChain, k)
		}
		kps = append(kps, kp)
	}
	room, ok := api.ChainRoom(chain)
	if !ok {
		return fmt.Errorf("%w: %q names no chain (room.<id> or %s)", ErrAuditChain, chain, api.IdentitiesChain)
	}
	prev := make([]byte, 32)
	for i := range entries {
		e := &entries[i]
		switch {
		case e.Seq != uint64(i+1):
			return fmt.Errorf("%w: entry %d has sequence %d", ErrAuditChain, i+1, e.Seq)
		case e.Chain != chain || e.Room != room:
			return fmt.Errorf("%w: entry %d belongs to chain %q", ErrAuditChain, e.Seq, e.Chain)
		case !bytes.Equal(e.Prev, prev):
			return fmt.Errorf("%w: entry %d does not link to entry %d", ErrAuditChain, e.Seq, e.Seq-1)
		}
		h := e.Hash()
		if !signedByAny(kps, h[:], e.Sig) {
			return fmt.Errorf("%w: entry %d is not signed by the service key", ErrAuditChain, e.Seq)
		}
		prev = h[:]
	}
	return nil
}

func signedByAny(kps []nkeys.KeyPair, msg, sig []byte) bool {
	for _, kp := range kps {
		if kp.Verify(msg, sig) == nil {
			return true
		}
	}
	return false
}
