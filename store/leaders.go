package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Leader moves of the room shards (docs/deploy.md, "Shards").
//
// JetStream elects each stream's leader on its own: at creation the
// meta leader picks a random online peer to campaign first, so the room
// shards of a new deployment may all be led by one node, and that node
// then carries every mutation — the very bound the shards exist to lift.
// A stream's configuration cannot name its leader (nats-server refuses a
// preferred server in a stream's placement), but a leader step-down can:
// $JS.API.STREAM.LEADER.STEPDOWN.<stream> with a placement whose
// "preferred" is a server name hands leadership to that current peer.

// LeaderMove is one room shard whose leadership [Store.SpreadLeaders] moved.
type LeaderMove struct {
	Stream string // the shard's stream, KV_<bucket>
	From   string // the server that led it
	To     string // the server asked to lead it
}

// String is "KV_x: n1 -> n2".
func (m LeaderMove) String() string { return m.Stream + ": " + m.From + " -> " + m.To }

// CreatedShards reports whether this Open found a new sharded deployment:
// it created room shard buckets, or one was made less than a minute ago
// (by a replica starting at the same time, or by an earlier attempt of
// this one that failed).
func (s *Store) CreatedShards() bool { return s.createdShards }

// SpreadLeaders balances the room shards' stream leaders over their peers:
// walking the shards in order, each keeps its leader while that server
// leads no more shards than the least loaded of its peers, and is otherwise
// handed to the least loaded peer (the first by name on a tie). On the
// three-node R3 deployment four shards end led 2, 1, 1. Balanced shards are
// not touched, so replicas that run it at once agree and it is safe to
// repeat. It waits for each shard to have a leader and current followers
// (bounded by ctx); one-replica shards and a one-shard deployment have
// nothing to spread. It returns the moves asked
// for: each new leader takes over within an election round.
func (s *Store) SpreadLeaders(ctx context.Context) ([]LeaderMove, error) {
	if len(s.rooms) < 2 {
		return nil, nil
	}
	led := map[string]int{}
	var moves []LeaderMove
	for _, sh := range s.rooms {
		cluster, err := sh.settled(ctx)
		if err != nil {
			return moves, err
		}
		if cluster == nil {
			continue
		}
		leader := cluster.Leader
		to := leastLoaded(led, leader, cluster.Replicas)
		led[to]++
		if to == leader {
			continue
		}
		if err := sh.stepDown(ctx, to); err != nil {
			return moves, err
		}
		moves = append(moves, LeaderMove{Stream: "KV_" + sh.name, From: leader, To: to})
	}
	return moves, nil
}

// leastLoaded is the server that should lead a stream led by leader with
// these followers, given how many streams each server leads so far:
// leader itself unless a follower that is not offline leads fewer.
func leastLoaded(led map[string]int, leader string, followers []*jetstream.PeerInfo) string {
	best := leader
	var names []string
	for _, p := range followers {
		if !p.Offline {
			names = append(names, p.Name)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		if led[n] < led[best] {
			best = n
		}
	}
	return best
}

// settled waits until the shard's stream has a leader and every follower
// that is not offline is current (a new stream's followers catch up within moments; a step-down
// to one that is not current would not go where it is asked), and returns
// its cluster view; nil for a stream that is not replicated.
func (s *Shard) settled(ctx context.Context) (*jetstream.ClusterInfo, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		info, err := s.stream.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("kv stream KV_%s: %w", s.name, err)
		}
		c := info.Cluster
		if c == nil || (c.Leader != "" && len(c.Replicas) == 0) {
			return nil, nil
		}
		if c.Leader != "" && !slices.ContainsFunc(c.Replicas, func(p *jetstream.PeerInfo) bool { return !p.Current && !p.Offline }) {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("kv stream KV_%s: no leader with current followers: %w", s.name, ctx.Err())
		case <-tick.C:
		}
	}
}

// stepDown asks the shard's stream leader to hand leadership to the
// server named preferred.
func (s *Shard) stepDown(ctx context.Context, preferred string) error {
	req, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": preferred}})
	msg, err := s.js.Conn().RequestWithContext(ctx, apiPrefix(s.js)+"STREAM.LEADER.STEPDOWN.KV_"+s.name, req)
	if err != nil {
		return fmt.Errorf("step down the leader of KV_%s for %s: %w", s.name, preferred, err)
	}
	var resp struct {
		Success bool                `json:"success"`
		Error   *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return fmt.Errorf("step down the leader of KV_%s: %w", s.name, err)
	}
	if resp.Error != nil {
		return fmt.Errorf("step down the leader of KV_%s for %s: %w", s.name, preferred, resp.Error)
	}
	if !resp.Success {
		return errors.New("step down the leader of KV_" + s.name + ": not done")
	}
	return nil
}

// apiPrefix is the subject prefix of js's JetStream API, with its dot.
func apiPrefix(js jetstream.JetStream) string {
	o := js.Options()
	switch {
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	case o.APIPrefix != "":
		return strings.TrimSuffix(o.APIPrefix, ".") + "."
	}
	return jetstream.DefaultAPIPrefix
}
