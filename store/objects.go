package store

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// objects is the sealed-key object store and what createObject needs of
// it: its bucket's name and stream.
type objects struct {
	jetstream.ObjectStore
	js     jetstream.JetStream
	bucket string
	stream jetstream.Stream
}

// objChunkSize is the chunk size nats.go's object store writes with (its
// default): an object of at most this size is one chunk.
const objChunkSize = 128 * 1024

// createObject writes a new object of one chunk in one round trip: its
// chunk and its meta message published back to back and acknowledged
// together, the meta message only if the name has none yet (expected last
// subject sequence 0), so an existing object is never replaced (objects
// are immutable: PutObject). The messages are the ones nats.go's Put
// writes (ADR-20: chunk on $O.<bucket>.C.<nuid>, meta with the rollup
// header on $O.<bucket>.M.<base64url name>, a SHA-256 digest), so nats.go
// reads the object back as its own. nats.go's Put costs two more round
// trips here (PutObject's existence check and Put's own lookup of the
// object it replaces) and a reply subscription per call; an add-member
// waits for it before its batch, in the one object stream every shard
// shares (docs/performance.md, "Shards").
//
// Any error leaves the outcome to PutObject's checked path: the name may
// be taken (by this very object, written by a copy of the request), or a
// lost acknowledgement may hide a write that happened. A definite refusal
// of the meta message removes the chunk again; a definite refusal of the
// chunk, the meta message that points at it.
func (o *objects) createObject(ctx context.Context, name string, data []byte) error {
	id := nuid.Next()
	chunk := nats.NewMsg("$O." + o.bucket + ".C." + id)
	chunk.Data = data
	sum := sha256.Sum256(data)
	meta := nats.NewMsg("$O." + o.bucket + ".M." + base64.URLEncoding.EncodeToString([]byte(name)))
	meta.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	meta.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
	var err error
	meta.Data, err = json.Marshal(&jetstream.ObjectInfo{
		ObjectMeta: jetstream.ObjectMeta{Name: name, Opts: &jetstream.ObjectMetaOptions{ChunkSize: objChunkSize}},
		Bucket:     o.bucket, NUID: id, Size: uint64(len(data)), Chunks: 1,
		Digest: "SHA-256=" + base64.URLEncoding.EncodeToString(sum[:]),
	})
	if err != nil {
		return err
	}
	cack, err := o.js.PublishMsgAsync(chunk)
	if err != nil {
		return err
	}
	mack, err := o.js.PublishMsgAsync(meta)
	if err != nil {
		return err
	}
	cseq, cerr := ackOf(ctx, cack)
	_, merr := ackOf(ctx, mack)
	var apiErr *jetstream.APIError
	switch {
	case cerr == nil && merr == nil:
		return nil
	case cerr == nil && errors.As(merr, &apiErr):
		_ = o.stream.DeleteMsg(ctx, cseq)
	case merr == nil && errors.As(cerr, &apiErr):
		_ = o.Delete(ctx, name)
	}
	return errors.Join(cerr, merr)
}

// ackOf waits for a publish's acknowledgement: the stored sequence or the
// stream's refusal.
func ackOf(ctx context.Context, f jetstream.PubAckFuture) (uint64, error) {
	select {
	case ack := <-f.Ok():
		return ack.Sequence, nil
	case err := <-f.Err():
		return 0, err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}
