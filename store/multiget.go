package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/membership/internal/replymux"
)

// Several keys in one request. A read that needs two keys of one shard (a
// room read: the room record and the caller's membership) asked for each
// with a get of its own; every request/reply pair costs the server and
// the service about as much CPU as the read's own work, so on a few cores
// the pairs, not the latency, bound the read rate (docs/performance.md,
// "Reads"). nats-server answers a direct get naming several subjects
// (JSApiMsgGetRequest.MultiLastFor, "multi_last") with the last message
// of each subject that has one, in sequence order, each carrying its
// subject, sequence, time and how many messages are still to come
// (Nats-Num-Pending), then an end-of-batch status (204 EOB), or a single
// 404 when no subject has a message. The server reads them all under the
// stream's read lock for gets (isolateMu), as of one last sequence: the
// entries are one snapshot of the shard, which two gets were not.
//
// Several messages answer one request, so they need a reply subject of
// their own. A subscription per call would cost what the merged request
// saves; the answers come instead through the connection's one wildcard
// reply subscription (internal/replymux), a token per call, as the
// client's verified calls do.
//
// Only direct gets take several subjects: the JetStream API's
// STREAM.MSG.GET refuses a request without a single subject or sequence.
// A replicated bucket is read through its stream leader's API, never
// directly (directGets, store.go: a follower may not have applied a
// membership change yet), so there GetLast sends today's separate leader
// gets, at once.

// maxMultiKeys is how many subjects nats-server answers in one multi_last
// get (getDirectMulti's maxAllowedResponses); more keys are read one by one.
const maxMultiKeys = 1024

// multiMaxBytes, when not 0, bounds the bytes of one multi_last answer
// (its max_bytes); 0 leaves the server's bound, its max_pending (64 MB by
// default), far above two records. Past the bound the server stops and
// says how many messages it held back; GetLast reads those keys one by
// one. Tests lower it to see that happen.
var multiMaxBytes = 0

// numPendingHeader is how many messages of a multi_last answer are still to
// come after the one that carries it (nats-server's JSNumPending).
const numPendingHeader = "Nats-Num-Pending"

// GetLast reads keys as [Shard.Get] reads each — value and revision, a
// nil Value with the marker's revision for a deleted or purged key, an
// empty Entry for one that never existed or whose last message expired —
// and returns their entries in the order of keys. On a bucket that
// answers direct gets (one replica) that is one request; on a replicated
// one, one leader get per key, sent at once.
func (s *Shard) GetLast(ctx context.Context, keys ...string) ([]Entry, error) {
	info := s.stream.CachedInfo()
	if len(keys) < 2 || len(keys) > maxMultiKeys || info == nil || !info.Config.AllowDirect {
		return s.getEach(ctx, keys)
	}
	for _, k := range keys {
		if k == "" || strings.ContainsAny(k, "*> \t\r\n") {
			return nil, fmt.Errorf("store: key %q is not a literal key", k)
		}
	}
	return retryLost(ctx, func(ctx context.Context) ([]Entry, error) {
		return s.multiGet(ctx, info.Config.Name, keys)
	})
}

// maxGetsAtOnce bounds the gets one getEach has in flight: a page of
// members on a replicated shard is up to api.MaxPage leader gets, and the
// stream leader's API queue is shared by every replica and client.
const maxGetsAtOnce = 16

// getEach reads keys with a get each, up to maxGetsAtOnce at once.
func (s *Shard) getEach(ctx context.Context, keys []string) ([]Entry, error) {
	out := make([]Entry, len(keys))
	errs := make([]error, len(keys))
	slots := make(chan struct{}, maxGetsAtOnce)
	var wg sync.WaitGroup
	for i, k := range keys {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			out[i], errs[i] = s.Get(ctx, k)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// multiGet is one attempt of a multi_last direct get of keys from stream.
func (s *Shard) multiGet(ctx context.Context, stream string, keys []string) ([]Entry, error) {
	want := make(map[string][]int, len(keys)) // subject → its places in keys
	req := struct {
		MultiLast []string `json:"multi_last"`
		MaxBytes  int      `json:"max_bytes,omitempty"`
	}{make([]string, 0, len(keys)), multiMaxBytes}
	for i, k := range keys {
		subj := s.prefix + k
		if _, dup := want[subj]; !dup {
			req.MultiLast = append(req.MultiLast, subj)
		}
		want[subj] = append(want[subj], i)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	nc := s.js.Conn()
	call, err := replymux.Of(nc).Open()
	if err != nil {
		return nil, err
	}
	defer call.Close() // replies to an abandoned attempt are dropped
	if err := nc.PublishRequest(apiPrefix(s.js)+"DIRECT.GET."+stream, call.Subject(), body); err != nil {
		return nil, err
	}
	out := make([]Entry, len(keys))
	for {
		msg, err := call.Next(ctx)
		if err != nil {
			return nil, err
		}
		done, err := s.takeReply(msg, want, out)
		if err != nil {
			return nil, err
		}
		if !done {
			continue
		}
		if len(want) > 0 { // the server stopped short (its byte bound): read the rest
			return s.getRest(ctx, keys, want, out)
		}
		return out, nil
	}
}

// takeReply puts one message of a multi_last answer into out and removes
// its subject from want; done: the answer is complete (its last message,
// the end-of-batch status or "no results").
func (s *Shard) takeReply(msg *nats.Msg, want map[string][]int, out []Entry) (done bool, err error) {
	seqHdr := msg.Header.Get(jetstream.SequenceHeader)
	if seqHdr == "" { // a status: 204 end of batch, 404 no key has a message, or a failure
		switch status := msg.Header.Get("Status"); status {
		case "204", "404":
			return true, nil
		case "503":
			return false, nats.ErrNoResponders
		default:
			return false, fmt.Errorf("store: multi get: status %s %s", status, msg.Header.Get("Description"))
		}
	}
	subj := msg.Header.Get(jetstream.SubjectHeader)
	at, ok := want[subj]
	if !ok {
		return false, fmt.Errorf("store: multi get: answer for subject %q not asked for", subj)
	}
	ent, err := entryOf(msg, seqHdr)
	if err != nil {
		return false, err
	}
	for _, i := range at {
		out[i] = ent
	}
	delete(want, subj)
	return msg.Header.Get(numPendingHeader) == "0", nil
}

// entryOf is the entry of a direct get's message, as [Shard.Get] makes it.
func entryOf(msg *nats.Msg, seqHdr string) (Entry, error) {
	seq, err := strconv.ParseUint(seqHdr, 10, 64)
	if err != nil {
		return Entry{}, fmt.Errorf("store: multi get: sequence %q: %w", seqHdr, err)
	}
	var ts time.Time
	if msg.Header.Get("KV-Operation") == "" { // a marker's time is not kept
		if ts, err = time.Parse(time.RFC3339Nano, msg.Header.Get(jetstream.TimeStampHeaer)); err != nil {
			return Entry{}, fmt.Errorf("store: multi get: time stamp: %w", err)
		}
	}
	return entry(msg.Header, msg.Data, seq, ts), nil
}

// getRest reads the keys of want one by one into out.
func (s *Shard) getRest(ctx context.Context, keys []string, want map[string][]int, out []Entry) ([]Entry, error) {
	var rest []string
	var at [][]int
	for _, places := range want {
		rest = append(rest, keys[places[0]])
		at = append(at, places)
	}
	got, err := s.getEach(ctx, rest)
	if err != nil {
		return nil, err
	}
	for j, places := range at {
		for _, i := range places {
			out[i] = got[j]
		}
	}
	return out, nil
}
