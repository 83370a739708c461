package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
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
	Bucket     string                // KV bucket for identities and, with one room shard, all state and mutation nonces; names the read-claims stream and the room shards too
	KeysBucket string                // object store for sealed keys
	Replicas   int                   // 1, 3 or 5
	Storage    jetstream.StorageType // file by default
	MaxTTL     time.Duration         // longest per-key TTL used (nonces)
	// Shards is the number of room shards (layout.go): 0 opens a
	// deployment with the count it was created with, and creates a new
	// one with a single shard (the original one-bucket layout). The
	// count is fixed when the deployment is created; another one is
	// refused with [ErrBucketConfig].
	Shards int
	// NewShards is, with Shards 0, the count a deployment that does not
	// exist yet is created with (0: one).
	NewShards int
	// WatchJS, if set, is JetStream on a connection of its own for the
	// watches and scans ([Store.Watch], [Store.Scan]). A watch starts by
	// delivering every key of its shards; on the connection that carries
	// the requests that flood queues their replies behind it (at 100k
	// rooms in four shards a restarted replica's first reads timed out
	// for half a minute, docs/performance.md). nil: the watches share js.
	WatchJS jetstream.JetStream
}

// Store is the service's view of JetStream. Its own Get, Commit, Keys and
// the other key methods act on the base bucket ([Store.Base]): identities,
// the signer index and the identities' audit chain, and, in a deployment
// with one room shard, everything. [Store.Room] is a room's shard;
// [Store.Watch] and [Store.Scan] cover every shard.
type Store struct {
	*Shard          // the base bucket
	rooms  []*Shard // room shards by number ([RoomShard]); the base alone with one
	all    []*Shard // every distinct bucket: the base first, then the room shards
	obj    *objects
	reads  *readClaims
	maxTTL time.Duration
	// createdShards: the room shards are new ([Store.CreatedShards]).
	createdShards bool
}

// MaxTTL is the longest per-key lifetime the store was opened for
// (Config.MaxTTL, at least a second).
func (s *Store) MaxTTL() time.Duration { return s.maxTTL }

// Open creates the buckets if they do not exist and binds to them. An
// existing bucket with another replica count or storage type, or a
// deployment created with another number of room shards, is reported with
// [ErrBucketConfig], never silently used or changed; a bucket that lacks
// atomic batches, per-key TTLs or the direct-get setting for its replica
// count (directGets) is reconfigured for them.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Store, error) {
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	for _, n := range []int{cfg.Shards, cfg.NewShards} {
		if n < 0 || n > MaxShards {
			return nil, fmt.Errorf("%w: %d room shards: want 1 to %d", ErrBucketConfig, n, MaxShards)
		}
	}
	create := cfg.Shards
	if create == 0 {
		create = cfg.NewShards
	}
	desc := "unibus membership: state and request nonces"
	if create > 1 {
		desc = fmt.Sprintf("unibus membership: identities and their nonces (rooms in %d shards)", create)
	}
	base, _, err := openBucket(ctx, js, cfg, cfg.Bucket, baseMetadata(create), desc)
	if err != nil {
		return nil, err
	}
	n, err := shardCount(base, cfg)
	if err != nil {
		return nil, err
	}
	st := &Store{Shard: base, rooms: []*Shard{base}, all: []*Shard{base}, maxTTL: max(cfg.MaxTTL, time.Second)}
	if n > 1 {
		if st.rooms, st.createdShards, err = openRoomShards(ctx, js, cfg, n); err != nil {
			return nil, err
		}
		st.all = append(st.all, st.rooms...)
	}
	for i, sh := range st.all {
		sh.id = i
	}
	if st.obj, err = openObjects(ctx, js, cfg); err != nil {
		return nil, err
	}
	if st.reads, err = openReadClaims(ctx, js, st, cfg); err != nil {
		return nil, err
	}
	return st, nil
}

// openBucket binds to (creating if missing) the KV bucket name, checks its
// shape and enables what the store needs of it. created reports that it
// did not exist (this call, or another replica's at the same time, made it).
func openBucket(ctx context.Context, js jetstream.JetStream, cfg Config, name string, meta map[string]string, desc string) (sh *Shard, created bool, err error) {
	streamName := "KV_" + name
	stream, err := js.Stream(ctx, streamName)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		created = true
		_, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:         name,
			Description:    desc,
			History:        1,
			Replicas:       cfg.Replicas,
			Storage:        cfg.Storage,
			LimitMarkerTTL: max(cfg.MaxTTL, time.Second),
			Metadata:       meta,
		})
		if err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
			return nil, false, fmt.Errorf("create kv bucket %s: %w", name, err)
		}
		if stream, err = js.Stream(ctx, streamName); err != nil {
			return nil, false, fmt.Errorf("kv stream %s: %w", streamName, err)
		}
	case err != nil:
		return nil, false, fmt.Errorf("kv stream %s: %w", streamName, err)
	}
	sc := stream.CachedInfo().Config
	if err := checkShape("kv bucket "+name, sc, cfg); err != nil {
		return nil, false, err
	}
	direct := directGets(cfg.Replicas)
	if !sc.AllowAtomicPublish || !sc.AllowMsgTTL || sc.AllowDirect != direct {
		sc.AllowAtomicPublish, sc.AllowMsgTTL, sc.AllowDirect = true, true, direct
		if stream, err = js.UpdateStream(ctx, sc); err != nil {
			return nil, false, fmt.Errorf("kv stream %s: enable atomic batches: %w", streamName, err)
		}
	}
	kv, err := js.KeyValue(ctx, name)
	if err != nil {
		return nil, false, fmt.Errorf("kv bucket %s: %w", name, err)
	}
	wkv := kv
	if cfg.WatchJS != nil {
		if wkv, err = cfg.WatchJS.KeyValue(ctx, name); err != nil {
			return nil, false, fmt.Errorf("kv bucket %s on the watch connection: %w", name, err)
		}
	}
	return &Shard{js: js, stream: stream, kv: kv, wkv: wkv, name: name, prefix: "$KV." + name + "."}, created, nil
}

// openObjects binds to (creating if missing) the sealed-key object store.
func openObjects(ctx context.Context, js jetstream.JetStream, cfg Config) (*objects, error) {
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
	return &objects{ObjectStore: obj, js: js, bucket: cfg.KeysBucket, stream: ostream}, nil
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

// PutObject stores a sealed-key object.
//
// Objects are immutable: a name carries the digest of the request that
// wrote it, so an existing live object already holds these bytes and is left as
// it is. Writing it again would replace its chunks under the feet of the
// copies of that request that reference it (the object store purges the
// old chunks after each put). An object of one chunk is created in one
// round trip, refused by the stream if the name is taken (objects.go); a
// refusal or an unknown outcome takes the checked path below. That round
// trip is bounded like a write (writeAttempt): a leader that dies holding
// it never answers, and the request would otherwise wait out its whole
// deadline before the checked path tried the new leader.
func (s *Store) PutObject(ctx context.Context, name string, data []byte) error {
	if len(data) > 0 && len(data) <= objChunkSize {
		bctx, cancel := boundWrite(ctx)
		err := s.obj.createObject(bctx, name, data)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
	}
	if info, err := s.obj.GetInfo(ctx, name); err == nil && !info.Deleted {
		return nil
	} else if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return err
	}
	_, err := retryLost(ctx, func(ctx context.Context) (*jetstream.ObjectInfo, error) {
		return s.obj.PutBytes(ctx, name, data)
	})
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
