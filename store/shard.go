package store

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
)

// Shard is one KV bucket of the deployment: the base bucket or a room
// shard (layout.go). A batch ([Shard.Commit]) commits within one shard;
// revisions are the shard's stream sequences and compare only within it.
type Shard struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	kv     jetstream.KeyValue
	wkv    jetstream.KeyValue // kv on the watches' connection (Config.WatchJS)
	name   string             // the bucket
	prefix string             // "$KV.<bucket>."
	id     int                // position in Store.Shards

	mu     sync.Mutex
	newest newestSeq // NewestSeq's last answer for a gone last message
}

// Name is the shard's KV bucket (its stream is KV_<name>).
func (s *Shard) Name() string { return s.name }

// ID is the shard's position in [Store.Shards]: 0 for the base bucket.
func (s *Shard) ID() int { return s.id }

// Entry is a key's current value and the revision to compare against. A
// missing or deleted key has a nil Value; Rev is then the sequence of its
// delete marker, or 0 if it never existed.
type Entry struct {
	Value []byte
	Rev   uint64
	Time  time.Time // when the value was written (the stream's timestamp); zero if none
}

// Exists reports whether the key holds a value.
func (e Entry) Exists() bool { return e.Value != nil }

// Get reads key from the stream leader.
func (s *Shard) Get(ctx context.Context, key string) (Entry, error) {
	m, err := retryLost(ctx, func(ctx context.Context) (*jetstream.RawStreamMsg, error) {
		return s.stream.GetLastMsgForSubject(ctx, s.prefix+key)
	})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Entry{}, nil
	}
	if err != nil {
		return Entry{}, err
	}
	return entry(m.Header, m.Data, m.Sequence, m.Time), nil
}

// entry is the Entry of a key's last message: a delete or purge marker
// (KV-Operation) holds no value, only its revision.
func entry(hdr nats.Header, data []byte, seq uint64, t time.Time) Entry {
	if hdr.Get("KV-Operation") != "" {
		return Entry{Rev: seq}
	}
	if data == nil {
		data = []byte{}
	}
	return Entry{Value: data, Rev: seq, Time: t}
}

// LastSeq is the shard's newest revision, from the stream leader:
// every write acknowledged before the call is at or below it.
func (s *Shard) LastSeq(ctx context.Context) (uint64, error) {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.LastSeq, nil
}

// NewestSeq is the sequence of the newest message still in the shard's
// stream, 0 if none, from the stream leader (an R1 stream's direct gets are
// served by its only server). Every write acknowledged before the call that
// still exists is at or below it. Unlike [Shard.LastSeq] it passes over
// messages that have gone since (expired nonce records and their markers):
// a watch never delivers those, so a reader waiting for a watch to reach
// LastSeq would wait until the shard's next write, which on an idle shard
// may never come; NewestSeq is always reachable. What can go without a
// newer message on its subject is only what was written with a TTL, which
// no watched state is.
//
// It costs the stream info and a get of its last sequence. Only when that
// message is gone does it ask for the newest message under the stream's
// subjects, which nats-server answers by matching every subject of the
// stream (milliseconds at 10k keys); that answer is kept for as long as
// the stream's last sequence stays the same and its message exists, so an
// idle shard pays it once.
func (s *Shard) NewestSeq(ctx context.Context) (uint64, error) {
	last, err := s.LastSeq(ctx)
	if err != nil || last == 0 {
		return last, err
	}
	if ok, err := s.hasMsg(ctx, last); ok || err != nil {
		return last, err
	}
	s.mu.Lock()
	known := s.newest
	s.mu.Unlock()
	if known.last == last {
		if ok, err := s.hasMsg(ctx, known.seq); ok || err != nil {
			return known.seq, err
		}
	}
	var seq uint64
	m, err := s.stream.GetLastMsgForSubject(ctx, s.prefix+">")
	switch {
	case err == nil:
		seq = m.Sequence
	case !errors.Is(err, jetstream.ErrMsgNotFound):
		return 0, err
	}
	s.mu.Lock()
	s.newest = newestSeq{last: last, seq: seq}
	s.mu.Unlock()
	return seq, nil
}

// newestSeq is NewestSeq's answer (seq) for a stream whose last sequence
// (last) was gone.
type newestSeq struct{ last, seq uint64 }

// hasMsg reports whether the message of sequence seq is still in the stream.
func (s *Shard) hasMsg(ctx context.Context, seq uint64) (bool, error) {
	if seq == 0 {
		return false, nil
	}
	_, err := s.stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	return err == nil, err
}

// LastRevision is the newest revision of a key under any of prefixes
// (dot-terminated token prefixes such as "id."), deleted keys included, or
// 0 if there is none, read from the stream leader: every write under them
// acknowledged before the call is at or below it. It writes nothing.
func (s *Shard) LastRevision(ctx context.Context, prefixes ...string) (uint64, error) {
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
func (s *Shard) Keys(ctx context.Context, prefix string) ([]string, error) {
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
func (s *Shard) Create(ctx context.Context, key string, value []byte, ttl time.Duration) error {
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
func (s *Shard) Delete(ctx context.Context, key string) error {
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
func (s *Shard) Commit(ctx context.Context, writes []Write) error {
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
	bctx, cancel := boundWrite(ctx)
	defer cancel()
	_, err := jetstreamext.PublishMsgBatch(bctx, s.js, msgs, jetstreamext.BatchFlowControl{AckFirst: false})
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
