package membertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nkeys"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/unibus/membership/envelope"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/store"
	"github.com/unibus/membership/subjects"
)

// Reply is a reply as it arrived on the wire: body, error code (0 when the
// reply carries no error header), reason token and error text.
type Reply struct {
	Data   []byte
	Code   int
	Reason string
	Text   string
	Floor  int64 // Unibus-Nonce-Floor-Ms, on a nonce_floor refusal
}

// Body encodes v as msgpack, failing the test if it cannot.
func Body(t testing.TB, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatalf("encode body: %v", err)
	}
	return b
}

// Nonce returns a fresh random nonce of [envelope.NonceSize] bytes.
func Nonce(t testing.TB) []byte {
	t.Helper()
	n := make([]byte, envelope.NonceSize)
	if _, err := rand.Read(n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Envelope signs body for subject with kp at ts with nonce, without
// marshalling it, so a test can tamper with fields first.
func Envelope(t testing.TB, kp nkeys.KeyPair, subject string, ts time.Time, nonce, body []byte) *envelope.Envelope {
	t.Helper()
	e, err := envelope.Sign(kp, subject, ts, nonce, body)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return e
}

// Marshal encodes e.
func Marshal(t testing.TB, e *envelope.Envelope) []byte {
	t.Helper()
	b, err := e.Marshal()
	if err != nil {
		t.Fatalf("marshal envelope: %v", err)
	}
	return b
}

// Signed returns the wire bytes of a request to op signed by kp now with a
// fresh nonce.
func Signed(t testing.TB, kp nkeys.KeyPair, op subjects.Op, body []byte) []byte {
	t.Helper()
	return Marshal(t, Envelope(t, kp, subjects.Subject(subjects.DefaultPrefix, op), time.Now(), Nonce(t), body))
}

// Request sends data to subject and returns the reply with its error
// headers decoded.
func Request(t testing.TB, nc *nats.Conn, subject string, data []byte) Reply {
	t.Helper()
	msg, err := nc.Request(subject, data, natstest.Patience)
	if err != nil {
		t.Fatalf("request %s: %v", subject, err)
	}
	return ReplyOf(t, msg)
}

// RequestOp sends data to op under the default prefix.
func RequestOp(t testing.TB, nc *nats.Conn, op subjects.Op, data []byte) Reply {
	t.Helper()
	return Request(t, nc, subjects.Subject(subjects.DefaultPrefix, op), data)
}

// ReplyOf decodes the error headers of msg.
func ReplyOf(t testing.TB, msg *nats.Msg) Reply {
	t.Helper()
	r := Reply{Data: msg.Data}
	if msg.Header == nil {
		return r
	}
	if c := msg.Header.Get(micro.ErrorCodeHeader); c != "" {
		n, err := strconv.Atoi(c)
		if err != nil {
			t.Fatalf("error code header %q is not a number", c)
		}
		r.Code = n
	}
	r.Reason = msg.Header.Get(subjects.HeaderReason)
	r.Text = msg.Header.Get(micro.ErrorHeader)
	if f := msg.Header.Get(subjects.HeaderNonceFloor); f != "" {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			t.Fatalf("nonce floor header %q is not a number", f)
		}
		r.Floor = n
	}
	return r
}

// Expect fails the test unless r carries code and reason. Code 0 expects a
// success.
func (r Reply) Expect(t testing.TB, code int, reason string) {
	t.Helper()
	if r.Code != code || r.Reason != reason {
		t.Fatalf("reply code %d reason %q (%q), want code %d reason %q", r.Code, r.Reason, r.Text, code, reason)
	}
}

// Decode decodes r's body into v with the protocol's strict decoder, as
// clients must (docs/protocol.md §6).
func (r Reply) Decode(t testing.TB, v any) {
	t.Helper()
	if err := envelope.Unmarshal(r.Data, v); err != nil {
		t.Fatalf("decode reply body: %v", err)
	}
}

// KV binds to the membership KV bucket on nc.
func KV(t testing.TB, nc *nats.Conn) jetstream.KeyValue {
	t.Helper()
	js := natstest.JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), natstest.Patience)
	defer cancel()
	kv, err := js.KeyValue(ctx, subjects.DefaultBucket)
	if err != nil {
		t.Fatalf("kv bucket %s: %v", subjects.DefaultBucket, err)
	}
	return kv
}

// Buckets binds to every KV bucket of the membership state: the base
// bucket and, in a deployment of more than one room shard, the room shards
// (store/layout.go).
func Buckets(t testing.TB, nc *nats.Conn) []jetstream.KeyValue {
	t.Helper()
	base := KV(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), natstest.Patience)
	defer cancel()
	st, err := base.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := []jetstream.KeyValue{base}
	n, _ := strconv.Atoi(st.(*jetstream.KeyValueBucketStatus).Metadata()[store.MetaRoomShards])
	js, _ := jetstream.New(nc)
	for i := 0; n > 1 && i < n; i++ {
		kv, err := js.KeyValue(ctx, subjects.RoomShardBucket(subjects.DefaultBucket, i))
		if err != nil {
			t.Fatalf("room shard %d: %v", i, err)
		}
		out = append(out, kv)
	}
	return out
}

// RoomKV binds to the bucket that holds room's keys: its room shard, or the
// one bucket of a one-shard deployment (docs/protocol.md §21).
func RoomKV(t testing.TB, nc *nats.Conn, room string) jetstream.KeyValue {
	t.Helper()
	b := Buckets(t, nc)
	if len(b) == 1 {
		return b[0]
	}
	return b[1+store.RoomShard(room, len(b)-1)]
}

// Keys lists every live key of the membership state, every shard's, sorted.
func Keys(t testing.TB, nc *nats.Conn) []string {
	t.Helper()
	var keys []string
	for k := range keysByBucket(t, nc) {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// keysByBucket maps every live key of the membership state to its bucket.
func keysByBucket(t testing.TB, nc *nats.Conn) map[string]jetstream.KeyValue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), natstest.Patience)
	defer cancel()
	out := map[string]jetstream.KeyValue{}
	for _, kv := range Buckets(t, nc) {
		kl, err := kv.ListKeys(ctx)
		if err != nil {
			t.Fatalf("list keys: %v", err)
		}
		for k := range kl.Keys() {
			out[k] = kv
		}
		_ = kl.Stop()
	}
	return out
}

// NonceKeys lists the keys of the membership bucket that claim a nonce.
func NonceKeys(t testing.TB, nc *nats.Conn) []string {
	t.Helper()
	var out []string
	for _, k := range Keys(t, nc) {
		if strings.HasPrefix(k, "nonce.") {
			out = append(out, k)
		}
	}
	return append(out, ReadClaims(t, nc)...)
}

// ReadClaims lists the read claims held by the read-claims stream, as
// "readclaim.<message id>", sorted.
func ReadClaims(t testing.TB, nc *nats.Conn) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), natstest.Patience)
	defer cancel()
	js := natstest.JetStream(t, nc)
	subject := subjects.ReadClaim(subjects.DefaultBucket)
	st, err := js.Stream(ctx, subjects.ReadClaimsStream(subjects.DefaultBucket))
	if err != nil {
		t.Fatalf("read claims stream: %v", err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	n := int(info.State.Subjects[subject])
	if n == 0 {
		return nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for m := range msgs.Messages() {
		out = append(out, "readclaim."+m.Headers().Get(jetstream.MsgIDHeader))
	}
	if len(out) != n {
		t.Fatalf("read %d of %d read claims", len(out), n)
	}
	sort.Strings(out)
	return out
}

// Bookkeeping keys that are not state: nonce claims.
var bookkeeping = []string{"nonce."}

func isBookkeeping(key string) bool {
	for _, p := range bookkeeping {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// Dump returns every key and value of the membership bucket except the
// bookkeeping keys (nonce claims, cache probes), for comparing state before
// and after a request.
func Dump(t testing.TB, nc *nats.Conn) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), natstest.Patience)
	defer cancel()
	out := map[string]string{}
	for k, kv := range keysByBucket(t, nc) {
		if isBookkeeping(k) {
			continue
		}
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			continue // removed between listing and reading
		}
		if err != nil {
			t.Fatalf("get %s: %v", k, err)
		}
		out[k] = string(e.Value())
	}
	return out
}

// SameDump fails the test if the two dumps differ, naming the keys.
func SameDump(t testing.TB, before, after map[string]string) {
	t.Helper()
	var diff []string
	for k, v := range before {
		if w, ok := after[k]; !ok {
			diff = append(diff, "-"+k)
		} else if w != v {
			diff = append(diff, "~"+k)
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			diff = append(diff, "+"+k)
		}
	}
	if len(diff) > 0 {
		sort.Strings(diff)
		t.Fatalf("state changed: %v", diff)
	}
}

// WaitGone waits until the micro instance id no longer answers
// $SRV.PING.<service>. micro's Stop drains its subscriptions and returns
// before the server has removed them; the ping subscription goes last, so
// once the instance stops answering pings its endpoints take no requests.
func WaitGone(t testing.TB, nc *nats.Conn, id string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		seen := false
		for _, a := range natstest.Gather(t, nc, Control(t, micro.PingVerb), 100*time.Millisecond) {
			if bytes.Contains(a, []byte(`"id":"`+id+`"`)) {
				seen = true
			}
		}
		if !seen {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("micro instance %s still answers pings", id)
		}
	}
}

// Control is micro's control subject of verb for the membership service
// ($SRV.<VERB>.membership): every running instance answers it.
func Control(t testing.TB, verb micro.Verb) string {
	t.Helper()
	s, err := micro.ControlSubject(verb, subjects.ServiceName, "")
	if err != nil {
		t.Fatal(err)
	}
	return s
}
