package callout

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
)

// Observe, in observe mode, lists every endpoint connection's subscriptions
// on every server each Config.ObserveEvery until ctx ends, and logs and counts
// (would_deny_subscribe) each one enforce would refuse, once per
// connection and subject. Connections enforce would refuse altogether are
// counted when they connect (would_deny_connect). It costs one CONNZ per
// server per round and one identity lookup per connected endpoint.
func (r *Revoker) Observe(ctx context.Context, dir Directory) {
	seen := map[string]bool{}
	t := time.NewTicker(r.cfg.ObserveEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			seen = r.observeOnce(ctx, dir, seen)
		}
	}
}

// subsReply is the part of a CONNZ answer with subscriptions observe reads.
type subsReply struct {
	Server struct {
		ID string `json:"id"`
	} `json:"server"`
	Data struct {
		Conns []struct {
			CID  uint64   `json:"cid"`
			User string   `json:"authorized_user"`
			Subs []string `json:"subscriptions_list"`
		} `json:"connections"`
	} `json:"data"`
}

// observeOnce is one round; it returns the denials seen in it, so that a
// denial is reported once while its subscription lasts.
func (r *Revoker) observeOnce(ctx context.Context, dir Directory, before map[string]bool) map[string]bool {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	now := map[string]bool{}
	grants := map[string]*jwt.Permissions{}
	msgs, _ := r.gather(ctx, map[string]any{"subscriptions": true, "auth": true, "limit": connzLimit}, r.servers.Load())
	for _, m := range msgs {
		var rep subsReply
		if json.Unmarshal(m.Data, &rep) != nil {
			continue
		}
		for _, c := range rep.Data.Conns {
			ep, ok := strings.CutPrefix(c.User, UserPrefix)
			if !ok {
				continue
			}
			perms, ok := grants[ep]
			if !ok {
				perms = r.enforcedPermissions(ctx, dir, ep)
				grants[ep] = perms
			}
			for _, sub := range c.Subs {
				key := fmt.Sprintf("%s/%d/%s", rep.Server.ID, c.CID, sub)
				if perms != nil && allowed(perms.Sub.Allow, sub) {
					continue
				}
				now[key] = true
				if before[key] {
					continue
				}
				r.stats.add(func(n *Counts) { n.WouldDenySub++ })
				r.cfg.Logger.Warn("bus observe: subscription enforce would deny", "endpoint", ep, "subject", sub, "cid", c.CID)
			}
		}
	}
	return now
}

// enforcedPermissions is what enforce would grant ep now; nil: nothing (an
// identity that is gone or disabled).
func (r *Revoker) enforcedPermissions(ctx context.Context, dir Directory, ep string) *jwt.Permissions {
	g, err := dir.BusGrantByEndpoint(ctx, ep)
	if err != nil || g == nil || g.Disabled {
		return nil
	}
	return Permissions(r.cfg.Prefix, ep, g.Subjects, r.cfg.Logger)
}

// allowed reports whether subject is within one of the allow patterns as
// Permissions writes them: a literal subject or a prefix ending in ".>".
func allowed(allow jwt.StringList, subject string) bool {
	for _, p := range allow {
		if p == subject {
			return true
		}
		if base, ok := strings.CutSuffix(p, ">"); ok && strings.HasPrefix(subject, base) && len(subject) > len(base) {
			return true
		}
	}
	return false
}
