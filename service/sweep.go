package service

import (
	"context"
	"log/slog"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/unibus/membership/store"
)

// Sweep defaults. The grace must exceed the request timeout by far: a
// mutation writes its sealed-key objects before the batch that references
// them, so a young unreferenced object may belong to a batch in flight.
const (
	DefaultSweepInterval = 10 * time.Minute
	DefaultSweepGrace    = 10 * time.Minute
)

// SweepResult counts what one sweep saw and did.
type SweepResult struct {
	Objects    int // sealed-key objects listed
	Referenced int // objects a KV record points at
	Young      int // unreferenced but within the grace period: kept
	Removed    int // unreferenced and older than the grace period: deleted
	Failed     int // deletions that failed (retried next sweep)
}

// Sweep deletes sealed-key objects that no KV record references (an epoch's
// bundle in epoch.<room>.<n>, a mid-epoch member's key in
// member.<room>.<endpoint>) and that were last written more than grace ago.
// Such objects were written for a batch that never committed, or belong to
// a member that was removed since.
//
// Objects are listed before references are read: an object older than grace
// was written more than grace ago, so its request (bounded by the request
// timeout, which grace exceeds) had committed or failed before the
// references are read, and a committed reference is seen. Several replicas
// may sweep at once; a deletion that finds nothing is not an error.
func Sweep(ctx context.Context, st *store.Store, grace time.Duration) (SweepResult, error) {
	var res SweepResult
	infos, err := st.ObjectInfos(ctx)
	if err != nil {
		return res, err
	}
	res.Objects = len(infos)
	cutoff := time.Now().Add(-grace)
	var old []string
	for _, info := range infos {
		if info.ModTime.After(cutoff) {
			continue
		}
		old = append(old, info.Name)
	}
	if len(old) == 0 {
		res.Young = res.Objects // an upper bound; nothing is referenced-checked
		return res, nil
	}
	refs := map[string]bool{}
	err = st.Scan(ctx, famEpoch, func(_ string, v []byte) error {
		var rec epochRecord
		if msgpack.Unmarshal(v, &rec) == nil && rec.Object != "" {
			refs[rec.Object] = true
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	err = st.Scan(ctx, famMember, func(_ string, v []byte) error {
		var rec memberRecord
		if msgpack.Unmarshal(v, &rec) == nil && rec.KeyObject != "" {
			refs[rec.KeyObject] = true
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	oldSet := map[string]bool{}
	for _, n := range old {
		oldSet[n] = true
	}
	for _, info := range infos {
		switch {
		case refs[info.Name]:
			res.Referenced++
		case !oldSet[info.Name]:
			res.Young++
		default:
			if err := st.DeleteObject(ctx, info.Name); err != nil {
				res.Failed++
				continue
			}
			res.Removed++
		}
	}
	return res, ctx.Err()
}

// RunSweeper sweeps every interval until ctx is done, logging each sweep
// that removed or failed to remove something.
func RunSweeper(ctx context.Context, st *store.Store, interval, grace time.Duration, log *slog.Logger) {
	if log == nil {
		log = slog.Default()
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sctx, cancel := context.WithTimeout(ctx, interval)
		res, err := Sweep(sctx, st, grace)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("orphan sweep", "error", err, "removed", res.Removed)
		case res.Removed > 0 || res.Failed > 0:
			log.Info("orphan sweep", "objects", res.Objects, "referenced", res.Referenced,
				"young", res.Young, "removed", res.Removed, "failed", res.Failed)
		default:
			log.Debug("orphan sweep", "objects", res.Objects, "referenced", res.Referenced, "young", res.Young)
		}
	}
}
