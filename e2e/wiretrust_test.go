package e2e

import (
	"context"
	"errors"
	"reflect"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/envelope"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/subjects"
)

// rogueAnswers makes a responder on the service subjects answer every
// request with payload. It stands for anyone who may publish there.
func rogueAnswers(t *testing.T, nc *nats.Conn, payload *[]byte) {
	t.Helper()
	sub, err := nc.Subscribe(subjects.DefaultPrefix+".>", func(m *nats.Msg) { _ = m.Respond(*payload) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// maxReplyAlloc bounds what one refused call may allocate: the request, its
// signature, the NATS message and the error, never what a reply declares.
const maxReplyAlloc = 256 << 10

// TestClientRefusesMalformedReplies (issue 11, defect 1): a client with no
// pinned key, answered by a rogue responder with each length bomb, wrong
// types, trailing bytes, the array form and an oversized reply, gets
// ErrMalformedReply from every operation and allocates a bounded amount.
// Before the fix the client decoded replies with the unbounded decoder and
// `{"members": dd ff ff ff ff}` killed the process.
func TestClientRefusesMalformedReplies(t *testing.T) {
	s := natstest.ServerWith(t, &server.Options{MaxPayload: client.MaxReply + 1024})
	var payload []byte
	rogueAnswers(t, natstest.Connect(t, s), &payload)
	id, err := identity.New("alice")
	if err != nil {
		t.Fatal(err)
	}
	cl := client.New(natstest.Connect(t, s), id, client.WithUnverifiedReplies(), client.WithRetries(0))
	type reply struct {
		name    string
		b       []byte
		bounded bool
	}
	var replies []reply
	for _, b := range bombs {
		replies = append(replies,
			reply{b.Name, b.Hdr, true},
			reply{b.Name + " in members", append([]byte{0x81, 0xa7, 'm', 'e', 'm', 'b', 'e', 'r', 's'}, b.Hdr...), true})
	}
	replies = append(replies,
		reply{"trailing byte", []byte{0x80, 0xc0}, true},
		reply{"array form", []byte{0x91, 0xa1, 'x'}, true},
		reply{"wrong type", []byte{0x81, 0xa2, 'i', 'd', 0x01}, true},
		reply{"negative epoch", []byte{0x81, 0xa5, 'e', 'p', 'o', 'c', 'h', 0xff}, true},
		reply{"unknown field", []byte{0x81, 0xa5, 'e', 'x', 't', 'r', 'a', 0x01}, true},
		reply{"oversized", append([]byte{0xc6, 0x00, 0x80, 0x00, 0x01}, make([]byte, client.MaxReply+1)...), false},
	)
	var worst uint64
	for _, r := range replies {
		payload = r.b
		for _, o := range api.Ops {
			resp := reflect.New(reflect.TypeOf(o.Reply)).Interface()
			ctx, cancel := context.WithTimeout(context.Background(), natstest.Patience)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			err := cl.Call(ctx, o.Op, o.Request, resp)
			runtime.ReadMemStats(&after)
			cancel()
			if !errors.Is(err, client.ErrMalformedReply) {
				t.Fatalf("%s answered %s: %v, want ErrMalformedReply", o.Op, r.name, err)
			}
			if d := after.TotalAlloc - before.TotalAlloc; r.bounded {
				worst = max(worst, d)
				if d > maxReplyAlloc {
					t.Fatalf("%s answered %s allocated %d bytes", o.Op, r.name, d)
				}
			}
		}
	}
	t.Logf("%d replies × %d operations refused; most allocated by one call: %d bytes", len(replies), len(api.Ops), worst)
}

// libraryWording matches texts of the msgpack library, which must never
// reach a caller (issue 11, defect 5).
var libraryWording = regexp.MustCompile(`(^|: )msgpack: |code=|decoding |array-encoded|reflect`)

// wireKinds are one sample of each msgpack type, to send where a field
// expects another.
var wireKinds = []struct {
	name string
	b    []byte
}{
	{"str", []byte{0xa1, 'x'}},
	{"bin", []byte{0xc4, 1, 'x'}},
	{"int", []byte{0x01}},
	{"negative", []byte{0xff}},
	{"bool", []byte{0xc3}},
	{"map", []byte{0x80}},
	{"array", []byte{0x90}},
	{"float", []byte{0xca, 0, 0, 0, 0}},
}

// accepts reports whether a field of Go type t takes wire kind k.
func accepts(t reflect.Type, k string) bool {
	switch t.Kind() {
	case reflect.String:
		return k == "str"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return k == "bin"
		}
		return k == "array"
	case reflect.Bool:
		return k == "bool"
	case reflect.Int, reflect.Int64:
		return k == "int" || k == "negative"
	case reflect.Uint64:
		return k == "int"
	case reflect.Struct:
		return k == "map"
	}
	return false
}

// msgpackKey encodes a short map key.
func msgpackKey(k string) []byte { return append([]byte{0xa0 | byte(len(k))}, k...) }

// TestWireBodyTypes (issue 11, defects 2–5): for every operation and every
// field of its request, each msgpack type the field does not take is
// answered 400 invalid with a text naming the field in the service's own
// words; so are the array form of each body, a negative epoch and unknown
// fields. Before the fix: array forms were decoded by position, a negative
// epoch wrapped to 2^64−1, bin passed for str, and 11 texts were the
// library's.
func TestWireBodyTypes(t *testing.T) {
	s, admin := membertest.Start(t, service.Config{RateLimit: -1})
	nc := natstest.Connect(t, s)
	kp := admin.Identity().Sign
	checked := 0
	check := func(t *testing.T, op subjects.Op, body []byte, field string) {
		t.Helper()
		r := membertest.RequestOp(t, nc, op, membertest.Signed(t, kp, op, body))
		r.Expect(t, subjects.CodeBadRequest, api.KindInvalid.Reason())
		checked++
		if libraryWording.MatchString(r.Text) {
			t.Errorf("%s ← %x: library wording in %q", op, body, r.Text)
		}
		if !strings.Contains(r.Text, field) {
			t.Errorf("%s ← %x: %q does not name %q", op, body, r.Text, field)
		}
	}
	for _, o := range api.Ops {
		rt := reflect.TypeOf(o.Request)
		t.Run(string(o.Op), func(t *testing.T) {
			check(t, o.Op, []byte{0x91, 0xa1, 'x'}, "array form")
			check(t, o.Op, append(append([]byte{0x81}, msgpackKey("extra")...), 0x01), `unknown field "extra"`)
			for i := range rt.NumField() {
				f := rt.Field(i)
				name, _, _ := strings.Cut(f.Tag.Get("msgpack"), ",")
				for _, k := range wireKinds {
					if accepts(f.Type, k.name) {
						continue
					}
					body := append(append([]byte{0x81}, msgpackKey(name)...), k.b...)
					check(t, o.Op, body, "field "+name)
				}
			}
		})
	}
	t.Run("negative epoch names the field", func(t *testing.T) {
		body := append(append(append([]byte{0x82}, msgpackKey("room")...), 0xa2, 'r', '1'), append(msgpackKey("epoch"), 0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)...)
		check(t, subjects.OpRoomKey, body, "field epoch: must not be negative")
	})
	t.Logf("%d error texts checked for library wording", checked)
}

// TestWireArrayFormAuditTarget (issue 11, defect 2): a room.add or
// room.remove body in array form is refused and leaves no audit entry; in
// map form the entry names the endpoint added or removed, taken from the
// operation's own request.
func TestWireArrayFormAuditTarget(t *testing.T) {
	f := newWireFixture(t)
	ctx := natstest.Ctx(t, 1)
	kp := f.alice.Identity().Sign
	sealer, _ := f.alice.Identity().XKey.PublicKey()
	// RemoveMemberRequest{room, endpoint} by position.
	remove := []byte{0x92, 0xa2, 'r', '1', 0xa3, 'b', 'o', 'b'}
	f.send(t, subjects.OpRoomRemove, membertest.Signed(t, kp, subjects.OpRoomRemove, remove), subjects.CodeBadRequest, api.KindInvalid.Reason())
	// AddMemberRequest{room, epoch, sealer, member{endpoint, sealed}} by position.
	add := append([]byte{0x94, 0xa2, 'r', '1', 0x01, 0xd9, byte(len(sealer))}, sealer...)
	add = append(add, 0x92, 0xa5, 'a', 'd', 'm', 'i', 'n', 0xc4, 1, 1)
	f.send(t, subjects.OpRoomAdd, membertest.Signed(t, kp, subjects.OpRoomAdd, add), subjects.CodeBadRequest, api.KindInvalid.Reason())
	if _, err := f.alice.RemoveMember(ctx, "r1", "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.alice.AddMember(ctx, "r1", "bob"); err != nil {
		t.Fatal(err)
	}
	entries, err := f.alice.Audit(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Op+":"+e.Target)
	}
	if want := "room.create: room.remove:bob room.add:bob"; strings.Join(got, " ") != want {
		t.Fatalf("audit trail %q, want %q", strings.Join(got, " "), want)
	}
}

// TestWireReplyBinding (issue 11, defect 6): every reply to a request that
// failed step 1 is signed and bound to it — to its nonce where the service
// read one, otherwise to SHA-256 of its bytes — and to nothing else.
// Before the fix these replies carried an empty nonce, so one of them could
// answer any request.
func TestWireReplyBinding(t *testing.T) {
	s, admin := membertest.Start(t, service.Config{MaxRequest: wireMaxRequest})
	nc := natstest.Connect(t, s)
	kp := admin.Identity().Sign
	verifier, _ := nkeys.FromPublicKey(membertest.ServicePub())
	body := membertest.Body(t, api.RoomRequest{Room: "r1"})
	env := func(change func(m map[string]any)) []byte {
		e := membertest.Envelope(t, kp, subjects.Subject(subjects.DefaultPrefix, subjects.OpRoomGet), time.Now(), membertest.Nonce(t), body)
		m := map[string]any{"v": e.Version, "ts": e.TS, "nonce": e.Nonce, "signer": e.Signer, "body_hash": e.BodyHash, "sig": e.Sig, "body": e.Body}
		change(m)
		return membertest.Body(t, m)
	}
	tests := []struct {
		name    string
		data    []byte
		byNonce bool
	}{
		{"unsigned", env(func(m map[string]any) { delete(m, "sig") }), true},
		{"empty", nil, false},
		{"oversized", make([]byte, wireMaxRequest+1), false},
		{"short nonce", env(func(m map[string]any) { m["nonce"] = make([]byte, 15) }), false},
		{"version 2", env(func(m map[string]any) { m["v"] = 2 }), true},
		{"ts as str", env(func(m map[string]any) { m["ts"] = "now" }), false},
		{"not msgpack", []byte("hello"), false},
	}
	other := env(func(m map[string]any) { m["v"] = 3 })
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, err := nc.Request(subjects.Subject(subjects.DefaultPrefix, subjects.OpRoomGet), tt.data, natstest.Patience)
			if err != nil {
				t.Fatal(err)
			}
			if msg.Header.Get(micro.ErrorCodeHeader) == "" {
				t.Fatalf("accepted: %x", tt.data)
			}
			if err := client.VerifyReplyTo(verifier, tt.data, msg); err != nil {
				t.Fatalf("reply does not verify for its own request: %v", err)
			}
			if err := client.VerifyReply(verifier, nil, msg); err == nil {
				t.Fatal("reply verifies with an empty nonce: bound to nothing")
			}
			if err := client.VerifyReplyTo(verifier, other, msg); err == nil {
				t.Fatal("reply verifies for another request")
			}
			if byNonce := client.VerifyReply(verifier, envelope.RequestNonce(tt.data), msg) == nil; byNonce != tt.byNonce {
				t.Fatalf("bound to the nonce: %v, want %v", byNonce, tt.byNonce)
			}
		})
	}
}
