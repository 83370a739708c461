package service

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/store"
	"github.com/unibus/membership/subjects"
)

// This file is the service's side of bus enforcement (package callout): what
// an identity may use on the bus, and which endpoints lose access when a
// mutation commits.

// BusGrant is what an identity may use on the bus: its endpoint and the
// subjects of the rooms it is a live member of.
type BusGrant struct {
	Endpoint string
	Disabled bool
	Subjects []string
}

// Revoker is told, after a mutation committed and before it is answered,
// which endpoints lost access to a room subject or to the bus.
type Revoker func(ctx context.Context, op subjects.Op, endpoints []string)

// BusGrant looks up the identity whose signing key is signKey and the
// subjects of its rooms; nil if no identity has that key. It never answers
// from the identity cache: a disabled identity that was just kicked must
// not be admitted again from a cache that has not seen the disable (the
// cache may lag by up to Config.IdentityMaxStale). It answers from the room
// index once the index has applied every shard's last sequence as read
// after the call began (one coalesced read, seqRounds), so every change
// acknowledged before the connection asked is seen (roomindex.go);
// otherwise from the store. Store time and pages are counted under
// room.mine, the read it resembles.
func (s *Service) BusGrant(ctx context.Context, signKey string) (*BusGrant, error) {
	c := &call{op: subjects.OpRoomMine}
	if s.index != nil {
		seqs, err := s.lastSeqs(ctx)
		if err != nil {
			return nil, s.storeErr(c, "last revision", err)
		}
		var g *BusGrant
		if s.fromIndex(c, func() (ok bool) { g, ok = s.index.busGrant(signKey, seqs); return ok }) {
			return g, nil
		}
	}
	var endpoint string
	if _, ok, err := s.get(ctx, c, keySigner(signKey), &endpoint); err != nil || !ok {
		return nil, err
	}
	return s.busGrant(ctx, c, endpoint, signKey)
}

// BusGrantByEndpoint is [Service.BusGrant] by endpoint id, whatever its key.
func (s *Service) BusGrantByEndpoint(ctx context.Context, endpoint string) (*BusGrant, error) {
	return s.busGrant(ctx, &call{op: subjects.OpRoomMine}, endpoint, "")
}

// busGrant reads endpoint's identity (nil if it has not the key signKey,
// when given) and its rooms' subjects.
func (s *Service) busGrant(ctx context.Context, c *call, endpoint, signKey string) (*BusGrant, error) {
	id, _, err := s.identity(ctx, c, endpoint)
	if err != nil || id == nil || (signKey != "" && id.SignKey != signKey) {
		return nil, err
	}
	g := &BusGrant{Endpoint: id.Endpoint, Disabled: id.Disabled}
	if id.Disabled {
		return g, nil
	}
	for after := ""; ; {
		rooms, next, err := s.busRooms(ctx, c, id.Endpoint, after)
		if err != nil {
			return nil, err
		}
		for _, r := range rooms {
			g.Subjects = append(g.Subjects, r.Subject)
		}
		if next == "" {
			return g, nil
		}
		after = next
	}
}

// busRooms is one page of an endpoint's rooms, from the room index when it
// has caught up with the store, else from the store (as room.mine).
func (s *Service) busRooms(ctx context.Context, c *call, endpoint, after string) ([]api.Room, string, error) {
	if s.index != nil {
		seq, err := s.lastSeqs(ctx)
		if err != nil {
			return nil, "", s.storeErr(c, "last revision", err)
		}
		var rooms []api.Room
		var next string
		if s.fromIndex(c, func() (ok bool) {
			rooms, next, ok = s.index.roomsOf(endpoint, seq, after, api.MaxPage)
			return ok
		}) {
			return rooms, next, nil
		}
	}
	return s.storedRooms(ctx, c, endpoint, after, api.MaxPage)
}

// revokeCommitted tells Config.Revoke which endpoints the committed writes
// took access from: a deleted membership (remove, leave), the identity of a
// disable or of a signing-key change, every member of a deleted room.
func (s *Service) revokeCommitted(ctx context.Context, c *call, writes []store.Write) {
	if s.cfg.Revoke == nil {
		return
	}
	var lost []string
	keyChanged := false
	for _, w := range writes {
		keyChanged = keyChanged || (w.Delete && strings.HasPrefix(w.Key, famSigner))
	}
	for _, w := range writes {
		switch {
		case w.Delete && strings.HasPrefix(w.Key, famMember):
			lost = append(lost, w.Key[strings.LastIndexByte(w.Key, '.')+1:])
		case !w.Delete && strings.HasPrefix(w.Key, famIdentity) &&
			(c.op == subjects.OpIdentityDisable || (c.op == subjects.OpIdentityRegister && keyChanged)):
			lost = append(lost, strings.TrimPrefix(w.Key, famIdentity))
		case !w.Delete && c.op == subjects.OpRoomDelete && strings.HasPrefix(w.Key, famRoom):
			// Read before the purge that follows the commit removes them.
			room := strings.TrimPrefix(w.Key, famRoom)
			keys, err := s.listKeys(ctx, prefixMembers(room))
			if err != nil {
				s.cfg.Logger.Warn("bus revocation: list members of deleted room", "room", room, "error", err)
			}
			for _, k := range keys {
				lost = append(lost, strings.TrimPrefix(k, prefixMembers(room)))
			}
		}
	}
	// The caller's own connections (a leave, the owner of a deleted room)
	// are kicked once its answer is flushed: kicked first, it would lose
	// the answer and wait out its timeout before resending.
	self := c.signer.Endpoint
	if slices.Contains(lost, self) {
		lost = slices.DeleteFunc(lost, func(e string) bool { return e == self })
		c.afterReply = func() {
			if err := s.nc.Flush(); err != nil {
				s.cfg.Logger.Warn("bus revocation: flush before kicking the caller", "error", err)
			}
			s.cfg.Revoke(ctx, c.op, []string{self})
		}
	}
	if len(lost) > 0 {
		s.cfg.Revoke(ctx, c.op, lost)
	}
}

// seqRounds coalesces the reads of the shards' last sequences that the
// callout and room.mine make: a storm of connections would otherwise send
// one JetStream stream-info request per shard each, and the server's
// JetStream API answers them one at a time (measured: 33 of 1,000
// simultaneous connections answered within the 2 s authorization timeout).
// A caller joins the next round; a round is sent only after every caller
// in it arrived, so its answer is at least as new as any commit
// acknowledged before the caller asked — the index then answers exactly as
// with a read of its own.
type seqRounds struct {
	mu      sync.Mutex
	next    *seqRound // the round callers join, sent when the running one ends
	running bool
}

type seqRound struct {
	done chan struct{}
	seqs []uint64
	err  error
}

// lastSeqs is every shard's newest message's sequence (store.NewestSeqs), read after the
// call began, in a round shared with the callers waiting at the same time.
func (s *Service) lastSeqs(ctx context.Context) ([]uint64, error) {
	return s.seqs.get(ctx, s.store.NewestSeqs, s.cfg.RequestTimeout)
}

// get returns last sequences read after the call began.
func (r *seqRounds) get(ctx context.Context, fetch func(context.Context) ([]uint64, error), timeout time.Duration) ([]uint64, error) {
	r.mu.Lock()
	if r.next == nil {
		r.next = &seqRound{done: make(chan struct{})}
	}
	round := r.next
	if !r.running {
		r.running = true
		go r.run(fetch, timeout)
	}
	r.mu.Unlock()
	select {
	case <-round.done:
		return round.seqs, round.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// run sends rounds while callers wait for one; each read is bounded by
// timeout, so the goroutine ends soon after the last caller.
func (r *seqRounds) run(fetch func(context.Context) ([]uint64, error), timeout time.Duration) {
	for {
		r.mu.Lock()
		round := r.next
		r.next = nil
		if round == nil {
			r.running = false
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		round.seqs, round.err = fetch(ctx)
		cancel()
		close(round.done)
	}
}
