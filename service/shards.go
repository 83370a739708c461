package service

import (
	"context"
	"fmt"
	"strings"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/store"
	"github.com/unibus/membership/subjects"
)

// Shards (store/layout.go, docs/protocol.md "Shards"). Every key of a room
// — its record, members, directory entries, epochs, owed rekey, audit
// chain — lives in the room's shard; identities, signers and the
// identities' audit chain in the base bucket. A mutation's nonce lives
// where its batch commits: the room's shard for a room operation, the base
// bucket for an identity operation. A replayed request is the same signed
// bytes, so the same body and room, so the same shard: its nonce is found
// where the first copy claimed it.
//
// A mutation's shard is the shard of the first room key its plan reads
// (call.shard, set by shardOf); every key its batch writes must be in
// that shard (batchShard), so a bug that mixed rooms fails loudly instead
// of committing half a mutation's state elsewhere.
//
// Room subjects are unique across rooms, so across shards: with more than
// one shard the subject's claim lives in the base bucket and is written
// before the room's batch (subjectclaims.go).

// roomOfKey is the room a key (or a dot-terminated key prefix) belongs to,
// or "" for a key of no room. Ids hold no dots (api.ValidateID), so every
// split below has one reading.
func roomOfKey(key string) string {
	fam, rest, ok := strings.Cut(key, ".")
	if !ok {
		return ""
	}
	first, tail, _ := strings.Cut(rest, ".")
	switch fam + "." {
	case famRoom, famOwed, famMember, famEpoch:
		return first // room.<room>, owed.<room>, member.<room>.…, epoch.<room>.…
	case famEpRooms:
		return tail // eprooms.<endpoint>.<room>; "" for the prefix of an endpoint's rooms
	case prefixAuditFamily, keyAuditHeadFamily:
		if first == "room" { // audit.room.<room>.<seq>, audithead.room.<room>
			room, _, _ := strings.Cut(tail, ".")
			return room
		}
	}
	return ""
}

// The audit chain's key families (audit.go spells the keys).
const (
	prefixAuditFamily  = "audit."
	keyAuditHeadFamily = "audithead."
)

// roomOp reports whether op acts on a room (its mutations commit in the
// room's shard).
func roomOp(op subjects.Op) bool { return strings.HasPrefix(string(op), "room.") }

// shardOf is the shard that holds key for c: the room's shard for a room's
// key, the call's own for its nonce, else the base bucket. The first room
// key a mutation reads fixes the shard its batch commits in.
func (s *Service) shardOf(c *call, key string) *store.Shard {
	if strings.HasPrefix(key, famNonce) {
		return s.nonceShard(c)
	}
	room := roomOfKey(key)
	if room == "" {
		return s.store.Base()
	}
	sh := s.store.Room(room)
	if c != nil && c.mutates {
		c.shard.CompareAndSwap(nil, sh)
	}
	return sh
}

// nonceShard is where c's nonce is claimed: its room's shard once the plan
// read a room key, else the base bucket (identity operations).
func (s *Service) nonceShard(c *call) *store.Shard {
	if sh := c.shard.Load(); sh != nil {
		return sh
	}
	return s.store.Base()
}

// batchShard is the one shard all of c's writes belong to, and so the one
// its nonce is claimed in.
func (s *Service) batchShard(c *call, writes []store.Write) (*store.Shard, error) {
	sh := c.shard.Load()
	for _, w := range writes {
		if strings.HasPrefix(w.Key, famNonce) {
			continue
		}
		at := s.store.Base()
		if room := roomOfKey(w.Key); room != "" {
			at = s.store.Room(room)
		}
		if sh == nil {
			sh = at
		}
		if at != sh {
			return nil, fmt.Errorf("batch spans shards %s and %s (key family %s)", sh.Name(), at.Name(), keyFamily(w.Key))
		}
	}
	if sh == nil {
		sh = s.store.Base()
	}
	c.shard.CompareAndSwap(nil, sh)
	return sh, nil
}

// listKeys lists the live keys under prefix: in the room's shard for a room's
// prefix, in the base bucket for the identity families, else (an
// endpoint's rooms, owed rekeys) in every shard.
func (s *Service) listKeys(ctx context.Context, prefix string) ([]string, error) {
	if room := roomOfKey(prefix); room != "" {
		return s.store.Room(room).Keys(ctx, prefix)
	}
	if strings.HasPrefix(prefix, famIdentity) || strings.HasPrefix(prefix, famSigner) || strings.HasPrefix(prefix, prefixAudit(api.IdentitiesChain)) {
		return s.store.Base().Keys(ctx, prefix)
	}
	return s.store.KeysAll(ctx, prefix)
}
