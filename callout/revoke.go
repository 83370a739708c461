package callout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/membership/subjects"
)

// System-account subjects the revoker uses, and nothing else
// (docs/deploy/callout/accounts.conf grants exactly these).
const (
	connzPing   = "$SYS.REQ.SERVER.PING.CONNZ"
	kickSubject = "$SYS.REQ.SERVER.%s.KICK"
)

// Revoker disconnects an endpoint's connections on every server.
type Revoker struct {
	sys     *nats.Conn   // a system-account user
	cfg     Config       // the callout's
	stats   *counters    // the callout's
	servers atomic.Int64 // how many servers answered the last count
}

// connzLimit is the most connections one CONNZ answer lists.
const connzLimit = 1 << 16

// NewRevoker revokes through sys, a connection of a system-account user; c
// supplies the mode, timeout, logger and the counters.
func (c *Callout) NewRevoker(ctx context.Context, sys *nats.Conn) *Revoker {
	r := &Revoker{sys: sys, cfg: c.cfg, stats: c.stats}
	r.count(ctx)
	go func() {
		t := time.NewTicker(countEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				r.count(ctx)
			}
		}
	}()
	return r
}

// countEvery is how often the revoker counts the servers of the cluster. A
// revocation waits for as many CONNZ answers as the last count found, so a
// server that joins is covered from the next count on (docs/security.md).
const countEvery = 5 * time.Second

// count gathers CONNZ answers for a user that cannot exist for the whole
// window: their number is the number of servers.
func (r *Revoker) count(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	if replies, _ := r.gather(ctx, map[string]any{"user": UserPrefix, "limit": 1}, 0); len(replies) > 0 {
		r.servers.Store(int64(len(replies)))
	}
}

// connzReply is the part of a server's CONNZ answer the revoker reads.
type connzReply struct {
	Server struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"server"`
	Data struct {
		Conns []struct {
			CID uint64 `json:"cid"`
		} `json:"connections"`
	} `json:"data"`
	Error *struct {
		Description string `json:"description"`
	} `json:"error"`
}

// Revoke is a [service.Revoker]: it disconnects every connection of each
// endpoint. It returns when all are kicked or the timeout passed; a failure
// is logged and counted, the mutation stands.
func (r *Revoker) Revoke(ctx context.Context, op subjects.Op, endpoints []string) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, ep := range endpoints {
		wg.Go(func() {
			n, err := r.revoke(ctx, ep)
			if err != nil {
				r.stats.add(func(c *Counts) { c.RevokeErrors++ })
				r.cfg.Logger.Info("bus revocation incomplete", "op", op, "endpoint", ep, "kicked", n, "error", err)
				return
			}
			if n > 0 {
				r.cfg.Logger.Info("bus revocation", "op", op, "endpoint", ep, "connections", n, "mode", r.cfg.Mode)
			}
		})
	}
	wg.Wait()
}

// revoke kicks (or, observing, counts) one endpoint's connections.
func (r *Revoker) revoke(ctx context.Context, endpoint string) (int, error) {
	replies, err := r.connz(ctx, UserPrefix+endpoint)
	n := 0
	for _, rep := range replies {
		for _, conn := range rep.Data.Conns {
			if r.cfg.Mode == Observe {
				r.stats.add(func(c *Counts) { c.WouldKick++ })
				n++
				continue
			}
			if kerr := r.kick(ctx, rep.Server.ID, conn.CID); kerr != nil {
				err = errors.Join(err, kerr)
				continue
			}
			r.stats.add(func(c *Counts) { c.Kicked++ })
			n++
		}
	}
	return n, err
}

// connz asks every server for user's connections. It gathers answers until
// as many servers as the last count answered, or the timeout: a server that
// is down costs the whole window.
func (r *Revoker) connz(ctx context.Context, user string) ([]connzReply, error) {
	want := r.servers.Load()
	msgs, err := r.gather(ctx, map[string]any{"user": user, "limit": connzLimit}, want)
	out := make([]connzReply, 0, len(msgs))
	for _, m := range msgs {
		var rep connzReply
		if jerr := json.Unmarshal(m.Data, &rep); jerr != nil || rep.Error != nil || rep.Server.ID == "" {
			return out, fmt.Errorf("connz answer from %q unusable", rep.Server.Name)
		}
		out = append(out, rep)
	}
	if err != nil {
		return out, fmt.Errorf("%d of %d servers answered", len(out), want)
	}
	return out, nil
}

// gather sends req to every server's CONNZ and collects answers until want
// arrived, or ctx ends (an error unless want is 0: then the window is the
// count).
func (r *Revoker) gather(ctx context.Context, req map[string]any, want int64) ([]*nats.Msg, error) {
	inbox := r.sys.NewInbox()
	ch := make(chan *nats.Msg, 64)
	sub, err := r.sys.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	data, _ := json.Marshal(req)
	if err := r.sys.PublishRequest(connzPing, inbox, data); err != nil {
		return nil, err
	}
	var out []*nats.Msg
	for want == 0 || int64(len(out)) < want {
		select {
		case m := <-ch:
			out = append(out, m)
		case <-ctx.Done():
			if want == 0 {
				return out, nil
			}
			return out, ctx.Err()
		}
	}
	return out, nil
}

// kick disconnects one connection on one server.
func (r *Revoker) kick(ctx context.Context, serverID string, cid uint64) error {
	req, _ := json.Marshal(map[string]uint64{"cid": cid})
	msg, err := r.sys.RequestWithContext(ctx, fmt.Sprintf(kickSubject, serverID), req)
	if err != nil {
		return fmt.Errorf("kick on %s: %w", serverID, err)
	}
	var rep connzReply
	if err := json.Unmarshal(msg.Data, &rep); err == nil && rep.Error != nil {
		// Already gone (it disconnected meanwhile) is what was wanted.
		r.cfg.Logger.Info("bus kick answered", "server", serverID, "cid", cid, "error", rep.Error.Description)
	}
	return nil
}
