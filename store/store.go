package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
)

// Errors callers match with errors.Is. Any other error means the store could
// not be used, and the caller must fail closed.
var (
	ErrConflict = errors.New("store: revision conflict")
	// ErrInFlight is an [ErrConflict] against a write the stream leader
	// has proposed but not yet applied (on a replicated stream, until a
	// quorum stored it): reads do not show that write yet, so a caller
	// that wants to know what won waits for it ([Store.AwaitApplied]).
	ErrInFlight = fmt.Errorf("%w: a write to the same key is not applied yet", ErrConflict)
	ErrExists   = errors.New("store: key exists")
	ErrNotFound = errors.New("store: not found")
	// ErrBucketConfig reports an existing bucket whose settings conflict
	// with the configuration; retrying does not help.
	ErrBucketConfig = errors.New("store: existing bucket has other settings")
)

// Config names and shapes the buckets.
type Config struct {
	Bucket     string                // KV bucket for state and mutation nonces; names the read-claims stream too
	KeysBucket string                // object store for sealed keys
	Replicas   int                   // 1, 3 or 5
	Storage    jetstream.StorageType // file by default
	MaxTTL     time.Duration         // longest per-key TTL used (nonces)
}

// Store is the service's view of JetStream.
type Store struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	kv     jetstream.KeyValue
	obj    jetstream.ObjectStore
	prefix string // "$KV.<bucket>."
	reads  *readClaims
	maxTTL time.Duration
}

// MaxTTL is the longest per-key lifetime the store was opened for
// (Config.MaxTTL, at least a second).
func (s *Store) MaxTTL() time.Duration { return s.maxTTL }

// Open creates the buckets if they do not exist and binds to them. An
// existing bucket with another replica count or storage type is reported
// with [ErrBucketConfig], never silently used or changed; one that lacks
// atomic batches, per-key TTLs or the direct-get setting for its replica
// count (directGets) is reconfigured for them.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Store, error) {
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	streamName := "KV_" + cfg.Bucket
	stream, err := js.Stream(ctx, streamName)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		_, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:         cfg.Bucket,
			Description:    "unibus membership: state and request nonces",
			History:        1,
			Replicas:       cfg.Replicas,
			Storage:        cfg.Storage,
			LimitMarkerTTL: max(cfg.MaxTTL, time.Second),
		})
		if err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
			return nil, fmt.Errorf("create kv bucket %s: %w", cfg.Bucket, err)
		}
		if stream, err = js.Stream(ctx, streamName); err != nil {
			return nil, fmt.Errorf("kv stream %s: %w", streamName, err)
		}
	case err != nil:
		return nil, fmt.Errorf("kv stream %s: %w", streamName, err)
	}
	sc := stream.CachedInfo().Config
	if err := checkShape("kv bucket "+cfg.Bucket, sc, cfg); err != nil {
		return nil, err
	}
	direct := directGets(cfg.Replicas)
	if !sc.AllowAtomicPublish || !sc.AllowMsgTTL || sc.AllowDirect != direct {
		sc.AllowAtomicPublish, sc.AllowMsgTTL, sc.AllowDirect = true, true, direct
		if stream, err = js.UpdateStream(ctx, sc); err != nil {
			return nil, fmt.Errorf("kv stream %s: enable atomic batches: %w", streamName, err)
		}
	}
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("kv bucket %s: %w", cfg.Bucket, err)
	}
	obj, err := js.ObjectStore(ctx, cfg.KeysBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		obj, err = js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{
			Bucket:      cfg.KeysBucket,
			Description: "unibus membership: sealed room keys",
			Replicas:    cfg.Replicas,
			Storage:     cfg.Storage,
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			obj, err = js.ObjectStore(ctx, cfg.KeysBucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", cfg.KeysBucket, err)
	}
	ostream, err := js.Stream(ctx, "OBJ_"+cfg.KeysBucket)
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", cfg.KeysBucket, err)
	}
	if err := checkShape("object store "+cfg.KeysBucket, ostream.CachedInfo().Config, cfg); err != nil {
		return nil, err
	}
	st := &Store{js: js, stream: stream, kv: kv, obj: obj, prefix: "$KV." + cfg.Bucket + ".", maxTTL: max(cfg.MaxTTL, time.Second)}
	if st.reads, err = openReadClaims(ctx, js, st, cfg); err != nil {
		return nil, err
	}
	return st, nil
}

// directGets reports whether a stream with this many replicas may answer
// gets directly. Any replica answers a direct get, so with followers a read
// right after a membership change could miss it: replicated streams are read
// through the leader (the JetStream API). A single replica is its own leader,
// and a direct get costs it far less than an API call (docs/performance.md).
func directGets(replicas int) bool { return replicas == 1 }

// checkShape compares an existing bucket's stream with the configuration.
func checkShape(what string, sc jetstream.StreamConfig, cfg Config) error {
	if sc.Replicas != cfg.Replicas {
		return fmt.Errorf("%w: %s has %d replicas, configured %d", ErrBucketConfig, what, sc.Replicas, cfg.Replicas)
	}
	if sc.Storage != cfg.Storage {
		return fmt.Errorf("%w: %s uses %s storage, configured %s", ErrBucketConfig, what, sc.Storage, cfg.Storage)
	}
	return nil
}

// Entry is a key's current value and the revision to compare against. A
// missing or deleted key has a nil Value; Rev is then the sequence of its
// delete marker, or 0 if it never existed.
type Entry struct {
	Value []byte
	Rev   uint64
}

// Exists reports whether the key holds a value.
func (e Entry) Exists() bool { return e.Value != nil }

// Get reads key from the stream leader.
func (s *Store) Get(ctx context.Context, key string) (Entry, error) {
	m, err := s.stream.GetLastMsgForSubject(ctx, s.prefix+key)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Entry{}, nil
	}
	if err != nil {
		return Entry{}, err
	}
	if op := m.Header.Get("KV-Operation"); op != "" {
		return Entry{Rev: m.Sequence}, nil
	}
	v := m.Data
	if v == nil {
		v = []byte{}
	}
	return Entry{Value: v, Rev: m.Sequence}, nil
}

// LastSeq is the state bucket's newest revision, from the stream leader:
// every write acknowledged before the call is at or below it.
func (s *Store) LastSeq(ctx context.Context) (uint64, error) {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.LastSeq, nil
}

// LastRevision is the newest revision of a key under any of prefixes
// (dot-terminated token prefixes such as "id."), deleted keys included, or
// 0 if there is none, read from the stream leader: every write under them
// acknowledged before the call is at or below it. It writes nothing.
func (s *Store) LastRevision(ctx context.Context, prefixes ...string) (uint64, error) {
	var last uint64
	for _, p := range prefixes {
		m, err := s.stream.GetLastMsgForSubject(ctx, s.prefix+p+">")
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return 0, err
		}
		last = max(last, m.Sequence)
	}
	return last, nil
}

// Keys lists the live keys that start with prefix (a dot-terminated token
// prefix such as "member.room1.").
func (s *Store) Keys(ctx context.Context, prefix string) ([]string, error) {
	kl, err := s.kv.ListKeysFiltered(ctx, prefix+">")
	if err != nil {
		return nil, err
	}
	defer kl.Stop()
	var keys []string
	for k := range kl.Keys() {
		keys = append(keys, k)
	}
	return keys, ctx.Err()
}

// Create writes key only if it holds no value, expiring after ttl (0: never).
// First writer wins, cluster-wide (readclaims.go records with it that read
// claims exist).
func (s *Store) Create(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	var opts []jetstream.KVCreateOpt
	if ttl > 0 {
		opts = append(opts, jetstream.KeyTTL(ttl))
	}
	_, err := s.kv.Create(ctx, key, value, opts...)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return ErrExists
	}
	return err
}

// Delete removes key outside any batch (clean-up only).
func (s *Store) Delete(ctx context.Context, key string) error {
	return s.kv.Delete(ctx, key)
}

// Write is one key of a batch. Rev is the revision the key must still have
// (0: must not exist). Delete writes a delete marker instead of Value.
type Write struct {
	Key    string
	Value  []byte
	Rev    uint64
	Delete bool
	TTL    time.Duration
}

// Commit applies writes as one atomic batch. If any key's revision moved,
// nothing is written and the error is [ErrConflict] ([ErrInFlight] when the
// write it lost to is not applied yet). A timeout does not tell
// whether the batch committed; callers make their batches recognisable (the
// nonce key) so that a retry can find out.
func (s *Store) Commit(ctx context.Context, writes []Write) error {
	msgs := make([]*nats.Msg, len(writes))
	for i, w := range writes {
		m := nats.NewMsg(s.prefix + w.Key)
		m.Data = w.Value
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(w.Rev, 10))
		if w.Delete {
			m.Data = nil
			m.Header.Set("KV-Operation", "DEL")
		}
		if w.TTL > 0 {
			m.Header.Set(jetstream.MsgTTLHeader, w.TTL.String())
		}
		msgs[i] = m
	}
	_, err := jetstreamext.PublishMsgBatch(ctx, s.js, msgs, jetstreamext.BatchFlowControl{AckFirst: false})
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jetstream.JSErrCodeStreamWrongLastSequence:
			return ErrConflict
		case jetstream.JSErrCodeStreamWrongLastSequenceConstant:
			// nats-server answers this constant form when a key of the
			// batch is in process (jetstream_batching.go: inflight,
			// expectedPerSubjectInProcess); our batches write each key
			// once and set only per-subject expectations, so that is
			// its only cause here.
			return ErrInFlight
		}
	}
	return err
}

// PutObject stores a sealed-key object.
//
// Objects are immutable: a name carries the digest of the request that
// wrote it, so an existing live object already holds these bytes and is left as
// it is. Writing it again would replace its chunks under the feet of the
// copies of that request that reference it (the object store purges the
// old chunks after each put).
func (s *Store) PutObject(ctx context.Context, name string, data []byte) error {
	if info, err := s.obj.GetInfo(ctx, name); err == nil && !info.Deleted {
		return nil
	} else if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return err
	}
	_, err := s.obj.PutBytes(ctx, name, data)
	return err
}

// GetObject reads a sealed-key object.
func (s *Store) GetObject(ctx context.Context, name string) ([]byte, error) {
	b, err := s.obj.GetBytes(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, ErrNotFound
	}
	return b, err
}

// DeleteObject removes a sealed-key object; a missing one is not an error.
func (s *Store) DeleteObject(ctx context.Context, name string) error {
	err := s.obj.Delete(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil
	}
	return err
}

// ListObjects returns the names of all sealed-key objects under prefix.
func (s *Store) ListObjects(ctx context.Context, prefix string) ([]string, error) {
	infos, err := s.obj.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, info := range infos {
		if strings.HasPrefix(info.Name, prefix) {
			names = append(names, info.Name)
		}
	}
	return names, nil
}

// ObjectInfo names a sealed-key object and says when it was last written
// (the server's timestamp of its metadata).
type ObjectInfo struct {
	Name    string
	ModTime time.Time
}

// ObjectInfos lists every sealed-key object with its modification time.
func (s *Store) ObjectInfos(ctx context.Context) ([]ObjectInfo, error) {
	infos, err := s.obj.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]ObjectInfo, 0, len(infos))
	for _, info := range infos {
		out = append(out, ObjectInfo{Name: info.Name, ModTime: info.ModTime})
	}
	return out, nil
}

// Change is one key of the state bucket as a watch delivers it.
type Change struct {
	Key     string
	Value   []byte // nil when Deleted
	Rev     uint64 // the key's revision: its sequence in the stream
	Deleted bool   // a delete or purge marker
}

// Watch delivers to apply every current key under prefixes (dot-terminated
// token prefixes such as "id."; none: every key), then calls loaded once,
// then delivers every later change, all in stream order, until ctx ends
// (its error is returned) or the watch fails.
func (s *Store) Watch(ctx context.Context, prefixes []string, apply func(Change), loaded func()) error {
	return s.watch(ctx, prefixes, false, func(c Change) error { apply(c); return nil }, func() bool { loaded(); return false })
}

// Scan calls fn with every live key under prefix (a dot-terminated token
// prefix such as "epoch.") and its value, stopping at fn's first error.
func (s *Store) Scan(ctx context.Context, prefix string, fn func(key string, value []byte) error) error {
	return s.watch(ctx, []string{prefix}, true, func(c Change) error { return fn(c.Key, c.Value) }, func() bool { return true })
}

// watch runs one ordered watch on prefixes; loaded reports whether to stop
// once the current values are delivered.
func (s *Store) watch(ctx context.Context, prefixes []string, liveOnly bool, fn func(Change) error, loaded func() bool) error {
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
	w, err := s.kv.WatchFiltered(ctx, filters, opts...)
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
			c := Change{Key: e.Key(), Value: e.Value(), Rev: e.Revision(), Deleted: e.Operation() != jetstream.KeyValuePut}
			if c.Deleted {
				c.Value = nil
			}
			if err := fn(c); err != nil {
				return err
			}
		}
	}
}
