package store

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/membership/subjects"
)

// The shard layout (docs/protocol.md, "Shards").
//
// A deployment has a base bucket (Config.Bucket) and N room shards, N fixed
// when the deployment is created. With N = 1 the base bucket is the room
// shard too: every key lives in it, as in the original one-bucket layout,
// and the base stream's configuration is exactly the original one (no
// metadata is added), so a deployment created before shards existed opens
// unchanged as a one-shard deployment. With N > 1 the base bucket keeps
// identities (and their nonces and audit chain) and records N in its
// stream metadata ([MetaRoomShards]); room i lives in the bucket
// [subjects.RoomShardBucket](Config.Bucket, i), everything a mutation of
// the room writes, its nonce included, in that one bucket, so that the
// mutation stays one atomic batch in one stream.
//
// Why the count is fixed: [RoomShard] maps a room id to a shard by N, so a
// deployment reopened with another N would look for its rooms in the wrong
// buckets. Open refuses it instead (ErrBucketConfig).

// MaxShards bounds the number of room shards: each is a stream, with its
// own leader and Raft group on a cluster.
const MaxShards = 64

// MetaRoomShards is the base stream's metadata key that records how many
// room shards the deployment was created with; absent means one.
const MetaRoomShards = "unibus.membership.room_shards"

// RoomShard is the room shard of room in a deployment of n room shards: the
// first 8 bytes of SHA-256(room id) as a big-endian unsigned integer,
// modulo n. It is part of the protocol and never changes (test vectors in
// testdata/room-shards.json).
func RoomShard(room string, n int) int {
	if n <= 1 {
		return 0
	}
	sum := sha256.Sum256([]byte(room))
	return int(binary.BigEndian.Uint64(sum[:8]) % uint64(n))
}

// Room is room's shard: where its state and the nonces of its mutations
// live.
func (s *Store) Room(room string) *Shard { return s.rooms[RoomShard(room, len(s.rooms))] }

// Base is the base bucket: identities, the signer index, the identities'
// audit chain and the nonces of identity operations; with one room shard,
// every key.
func (s *Store) Base() *Shard { return s.Shard }

// Shards lists every distinct bucket, the base first ([Shard.ID] is the
// position here).
func (s *Store) Shards() []*Shard { return s.all }

// RoomShards is the number of room shards the deployment was created with.
func (s *Store) RoomShards() int { return len(s.rooms) }

// baseMetadata is the metadata a new base bucket is created with: nothing
// for one shard (the original layout, byte for byte).
func baseMetadata(shards int) map[string]string {
	if shards <= 1 {
		return nil
	}
	return map[string]string{MetaRoomShards: strconv.Itoa(shards)}
}

// shardCount reads the count the deployment was created with from the base
// stream and checks it against the configuration.
func shardCount(base *Shard, cfg Config) (int, error) {
	n := 1
	if v, ok := base.stream.CachedInfo().Config.Metadata[MetaRoomShards]; ok {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 || n > MaxShards {
			return 0, fmt.Errorf("%w: kv bucket %s records %q room shards", ErrBucketConfig, base.name, v)
		}
	}
	if cfg.Shards != 0 && cfg.Shards != n {
		return 0, fmt.Errorf("%w: the deployment in kv bucket %s was created with %d room shard(s), configured %d; the count is fixed at creation (docs/deploy.md, \"Shards\")",
			ErrBucketConfig, base.name, n, cfg.Shards)
	}
	return n, nil
}

// newShardAge is how long after its creation a room shard counts as new
// ([Store.CreatedShards]): an Open that created shards and then failed
// (a timeout while the cluster settles) is retried, and the retry finds
// them made.
const newShardAge = time.Minute

// openRoomShards binds to (creating if missing) the n room shard buckets;
// created reports that any was missing or is new.
func openRoomShards(ctx context.Context, js jetstream.JetStream, cfg Config, n int) (shards []*Shard, created bool, err error) {
	shards = make([]*Shard, n)
	for i := range shards {
		desc := fmt.Sprintf("unibus membership: room shard %d of %d (rooms and their mutation nonces)", i, n)
		sh, made, err := openBucket(ctx, js, cfg, subjects.RoomShardBucket(cfg.Bucket, i), nil, desc)
		if err != nil {
			return nil, false, err
		}
		fresh := time.Since(sh.stream.CachedInfo().Created) < newShardAge
		shards[i], created = sh, created || made || fresh
	}
	return shards, created, nil
}

// NewestSeqs is every shard's newest message ([Shard.NewestSeq]), by
// [Shard.ID], read from the shards' leaders at once: every write
// acknowledged before the call that still exists is at or below its
// shard's entry, and a watch of the shard reaches it.
func (s *Store) NewestSeqs(ctx context.Context) ([]uint64, error) {
	seqs := make([]uint64, len(s.all))
	err := s.each(ctx, func(ctx context.Context, sh *Shard) error {
		seq, err := sh.NewestSeq(ctx)
		seqs[sh.id] = seq
		return err
	})
	return seqs, err
}

// KeysAll lists the live keys under prefix in every shard, one shard after
// another (callers sort them if they need an order).
func (s *Store) KeysAll(ctx context.Context, prefix string) ([]string, error) {
	var all []string
	for _, sh := range s.all {
		keys, err := sh.Keys(ctx, prefix)
		if err != nil {
			return nil, err
		}
		all = append(all, keys...)
	}
	return all, nil
}
