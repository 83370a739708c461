package store

import (
	"context"
	"errors"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// Change is one key of a shard as a watch delivers it.
type Change struct {
	Key     string
	Value   []byte // nil when Deleted
	Rev     uint64 // the key's revision: its sequence in its shard's stream
	Deleted bool   // a delete or purge marker
	Shard   int    // the shard it is in ([Shard.ID])
}

// Watch delivers to apply every current key under prefixes (dot-terminated
// token prefixes such as "id."; none: every key) in every shard, then calls
// loaded once, when every shard's current keys are delivered, then delivers
// every later change, until ctx ends (its error is returned) or a shard's
// watch fails. apply is never called concurrently; the changes of one
// shard come in its stream order, those of different shards interleaved.
//
// The shards' watches start one after another, each when the one before
// has delivered its current keys: loading them all at once only makes
// them compete for the same cores and connection, and at 100k rooms in
// four shards five loads at once took 36–62 s against 13–16 s for the
// same keys in one shard (docs/performance.md).
func (s *Store) Watch(ctx context.Context, prefixes []string, apply func(Change), loaded func()) error {
	var mu sync.Mutex
	left := len(s.all)
	turn := make([]chan struct{}, len(s.all)+1) // turn[i] closes when shard i may start
	for i := range turn {
		turn[i] = make(chan struct{})
	}
	close(turn[0])
	return s.each(ctx, func(ctx context.Context, sh *Shard) error {
		select {
		case <-turn[sh.id]:
		case <-ctx.Done():
			return ctx.Err()
		}
		return sh.watch(ctx, prefixes, false, func(c Change) error {
			mu.Lock()
			defer mu.Unlock()
			apply(c)
			return nil
		}, func() bool {
			mu.Lock()
			defer mu.Unlock()
			close(turn[sh.id+1])
			if left--; left == 0 {
				loaded()
			}
			return false
		})
	})
}

// Scan calls fn with every live key under prefix (a dot-terminated token
// prefix such as "epoch.") in every shard and its value, one shard after
// another, stopping at fn's first error.
func (s *Store) Scan(ctx context.Context, prefix string, fn func(key string, value []byte) error) error {
	for _, sh := range s.all {
		err := sh.watch(ctx, []string{prefix}, true, func(c Change) error { return fn(c.Key, c.Value) }, func() bool { return true })
		if err != nil {
			return err
		}
	}
	return nil
}

// each runs f on every shard at once until all return; the first error
// ends the others (through their context) and is returned.
func (s *Store) each(ctx context.Context, f func(context.Context, *Shard) error) error {
	if len(s.all) == 1 {
		return f(ctx, s.all[0])
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(s.all))
	for _, sh := range s.all {
		go func() { errs <- f(ctx, sh) }()
	}
	var first error
	for range s.all {
		if err := <-errs; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}

// watch runs one ordered watch on prefixes; loaded reports whether to stop
// once the current values are delivered.
func (s *Shard) watch(ctx context.Context, prefixes []string, liveOnly bool, fn func(Change) error, loaded func() bool) error {
	filters := []string{">"}
	if len(prefixes) > 0 {
		filters = make([]string, len(prefixes))
		for i, p := range prefixes {
			filters[i] = p + ">"
		}
	}
	var opts []jetstream.WatchOpt
	if liveOnly {
		opts = append(opts, jetstream.IgnoreDeletes())
	}
	w, err := s.wkv.WatchFiltered(ctx, filters, opts...)
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("store: watcher closed")
			}
			if e == nil {
				if loaded() {
					return nil // all current values seen
				}
				continue
			}
			c := Change{Key: e.Key(), Value: e.Value(), Rev: e.Revision(), Deleted: e.Operation() != jetstream.KeyValuePut, Shard: s.id}
			if c.Deleted {
				c.Value = nil
			}
			if err := fn(c); err != nil {
				return err
			}
		}
	}
}
