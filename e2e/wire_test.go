package e2e

import (
	"context"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/envelope"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/msgpacktest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/subjects"
)

// wireMaxRequest is the request limit of the service in the wire tests.
const wireMaxRequest = 2048

// wireFixture is a service with a room r1 owned by alice with bob.
type wireFixture struct {
	nc    *nats.Conn
	alice *client.Client
	bob   *client.Client
}

func newWireFixture(t *testing.T) *wireFixture {
	t.Helper()
	s, admin := membertest.Start(t, service.Config{MaxRequest: wireMaxRequest})
	f := &wireFixture{
		nc:    natstest.Connect(t, s),
		alice: membertest.Member(t, s, admin, "alice"),
		bob:   membertest.Member(t, s, admin, "bob"),
	}
	ctx, cancel := context.WithTimeout(context.Background(), natstest.Patience)
	defer cancel()
	if _, _, err := f.alice.CreateRoom(ctx, "r1", "chat.r1", []string{"bob"}); err != nil {
		t.Fatalf("create r1: %v", err)
	}
	return f
}

// serves fails the test unless the service still answers a valid request.
func (f *wireFixture) serves(t *testing.T) {
	t.Helper()
	r := membertest.RequestOp(t, f.nc, subjects.OpRoomGet,
		membertest.Signed(t, f.alice.Identity().Sign, subjects.OpRoomGet, membertest.Body(t, api.RoomRequest{Room: "r1"})))
	r.Expect(t, 0, "")
	var room api.Room
	r.Decode(t, &room)
	if room.ID != "r1" || room.Members != 2 {
		t.Fatalf("room after the bad request = %+v", room)
	}
}

// send sends data to op and checks code and reason, that no state changed
// and that the service still serves.
func (f *wireFixture) send(t *testing.T, op subjects.Op, data []byte, code int, reason string) {
	t.Helper()
	before := membertest.Dump(t, f.nc)
	membertest.RequestOp(t, f.nc, op, data).Expect(t, code, reason)
	membertest.SameDump(t, before, membertest.Dump(t, f.nc))
	f.serves(t)
}

// bombs declare a length far larger than the bytes that follow, one per
// length-prefixed msgpack type. msgpack/v5 v5.4.x allocates what `dd ff ff
// ff ff` declares and dies of a fatal out-of-memory.
var bombs = msgpacktest.Bombs()

// TestWireBombs sends each bomb as the whole envelope and as the body of a
// correctly signed envelope (the body hash covers the bomb), to a read and
// to a mutation: each is 400 and the service lives on.
func TestWireBombs(t *testing.T) {
	f := newWireFixture(t)
	kp := f.alice.Identity().Sign
	for _, bomb := range bombs {
		t.Run(bomb.Name+"/envelope", func(t *testing.T) {
			f.send(t, subjects.OpRoomGet, bomb.Hdr, subjects.CodeBadRequest, api.KindInvalid.Reason())
		})
		for _, op := range []subjects.Op{subjects.OpRoomGet, subjects.OpRoomAdd, subjects.OpRoomCreate} {
			t.Run(bomb.Name+"/body/"+string(op), func(t *testing.T) {
				f.send(t, op, membertest.Signed(t, kp, op, bomb.Hdr), subjects.CodeBadRequest, api.KindInvalid.Reason())
			})
		}
		// The bomb nested as a field of an otherwise valid body.
		t.Run(bomb.Name+"/field", func(t *testing.T) {
			body := append([]byte{0x81, 0xa4, 'r', 'o', 'o', 'm'}, bomb.Hdr...)
			f.send(t, subjects.OpRoomGet, membertest.Signed(t, kp, subjects.OpRoomGet, body), subjects.CodeBadRequest, api.KindInvalid.Reason())
		})
	}
}

// rawEnvelope signs the canonical bytes with kp whatever its key type, so a
// test can make an envelope that [envelope.Sign] refuses to make.
func rawEnvelope(t *testing.T, kp nkeys.KeyPair, subject string, body []byte) []byte {
	t.Helper()
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	e := &envelope.Envelope{Version: envelope.Version, TS: time.Now().UnixMilli(), Nonce: membertest.Nonce(t),
		Signer: pub, BodyHash: sum[:], Body: body}
	if e.Sig, err = kp.Sign(e.Canonical(subject)); err != nil {
		t.Fatal(err)
	}
	return membertest.Marshal(t, e)
}

// TestWireRejections covers each check of the pipeline on the wire: every
// case gets its code and reason header, changes no state, and the service
// serves the next valid request.
func TestWireRejections(t *testing.T) {
	f := newWireFixture(t)
	alice := f.alice.Identity()
	kp := alice.Sign
	sealer, _ := alice.XKey.PublicKey()
	subj := func(op subjects.Op) string { return subjects.Subject(subjects.DefaultPrefix, op) }
	getBody := membertest.Body(t, api.RoomRequest{Room: "r1"})
	addBody := membertest.Body(t, api.AddMemberRequest{Room: "r1", Epoch: 1, Sealer: sealer,
		Member: api.SealedKey{Endpoint: "admin", Sealed: []byte("sealed")}})
	create := func(id, subject string) []byte {
		return membertest.Body(t, api.CreateRoomRequest{ID: id, Subject: subject, Sealer: sealer,
			Members: []api.SealedKey{{Endpoint: "alice", Sealed: []byte("sealed")}}})
	}
	signedAt := func(op subjects.Op, ts time.Time, body []byte) []byte {
		return membertest.Marshal(t, membertest.Envelope(t, kp, subj(op), ts, membertest.Nonce(t), body))
	}
	tamper := func(op subjects.Op, body []byte, change func(e *envelope.Envelope)) []byte {
		e := membertest.Envelope(t, kp, subj(op), time.Now(), membertest.Nonce(t), body)
		change(e)
		return membertest.Marshal(t, e)
	}
	withField := func(op subjects.Op, body []byte, key string, value any) []byte {
		e := membertest.Envelope(t, kp, subj(op), time.Now(), membertest.Nonce(t), body)
		m := map[string]any{"v": e.Version, "ts": e.TS, "nonce": e.Nonce, "signer": e.Signer,
			"body_hash": e.BodyHash, "sig": e.Sig, "body": e.Body, key: value}
		b, err := msgpack.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	bodyWith := func(v any, key string, value any) []byte {
		var m map[string]any
		if err := msgpack.Unmarshal(membertest.Body(t, v), &m); err != nil {
			t.Fatal(err)
		}
		m[key] = value
		return membertest.Body(t, m)
	}
	account, _ := nkeys.CreateAccount()
	server, _ := nkeys.CreateServer()
	operator, _ := nkeys.CreateOperator()

	const (
		bad    = subjects.CodeBadRequest
		denied = subjects.CodeUnauthorized
	)
	invalid, unauth := api.KindInvalid.Reason(), api.KindUnauthenticated.Reason()
	big := make([]byte, wireMaxRequest+1)
	// Outside the skew window even after the subtests before it ran: the
	// table is signed once, up front, and a loaded machine takes seconds
	// to get through it (31 s once let a future request in).
	stale := 2 * service.DefaultSkew
	tests := []struct {
		name   string
		op     subjects.Op
		data   []byte
		code   int
		reason string
	}{
		{"oversized raw", subjects.OpRoomGet, big, subjects.CodeTooLarge, api.KindTooLarge.Reason()},
		// One byte less passes the size check and fails decoding.
		{"at the limit raw", subjects.OpRoomGet, big[:wireMaxRequest], bad, invalid},
		{"oversized signed", subjects.OpRoomAdd, membertest.Signed(t, kp, subjects.OpRoomAdd, big), subjects.CodeTooLarge, api.KindTooLarge.Reason()},
		{"stale past read", subjects.OpRoomGet, signedAt(subjects.OpRoomGet, time.Now().Add(-stale), getBody), denied, unauth},
		{"stale future read", subjects.OpRoomGet, signedAt(subjects.OpRoomGet, time.Now().Add(stale), getBody), denied, unauth},
		{"stale past mutation", subjects.OpRoomAdd, signedAt(subjects.OpRoomAdd, time.Now().Add(-stale), addBody), denied, unauth},
		{"stale future mutation", subjects.OpRoomAdd, signedAt(subjects.OpRoomAdd, time.Now().Add(stale), addBody), denied, unauth},
		{"signed for room.get sent to room.add", subjects.OpRoomAdd, signedAt(subjects.OpRoomGet, time.Now(), addBody), denied, unauth},
		{"signed for room.add sent to room.delete", subjects.OpRoomDelete, signedAt(subjects.OpRoomAdd, time.Now(), getBody), denied, unauth},
		{"signed for another prefix", subjects.OpRoomGet, membertest.Marshal(t, membertest.Envelope(t, kp, "other.v1.room.get", time.Now(), membertest.Nonce(t), getBody)), denied, unauth},
		{"body changed after signing", subjects.OpRoomAdd, tamper(subjects.OpRoomAdd, addBody, func(e *envelope.Envelope) {
			e.Body = membertest.Body(t, api.AddMemberRequest{Room: "r1", Epoch: 1, Sealer: sealer, Member: api.SealedKey{Endpoint: "bob", Sealed: []byte("x")}})
		}), bad, invalid},
		{"body hash of another body", subjects.OpRoomGet, tamper(subjects.OpRoomGet, getBody, func(e *envelope.Envelope) {
			sum := sha256.Sum256([]byte("other"))
			e.BodyHash = sum[:]
		}), bad, invalid},
		{"signature flipped", subjects.OpRoomGet, tamper(subjects.OpRoomGet, getBody, func(e *envelope.Envelope) { e.Sig[0] ^= 1 }), denied, unauth},
		{"ts changed after signing", subjects.OpRoomGet, tamper(subjects.OpRoomGet, getBody, func(e *envelope.Envelope) { e.TS-- }), denied, unauth},
		{"nonce changed after signing", subjects.OpRoomGet, tamper(subjects.OpRoomGet, getBody, func(e *envelope.Envelope) { e.Nonce[0] ^= 1 }), denied, unauth},
		{"short nonce", subjects.OpRoomGet, tamper(subjects.OpRoomGet, getBody, func(e *envelope.Envelope) { e.Nonce = e.Nonce[:envelope.MinNonce-1] }), bad, invalid},
		{"version 2", subjects.OpRoomGet, tamper(subjects.OpRoomGet, getBody, func(e *envelope.Envelope) { e.Version = 2 }), bad, invalid},
		{"account key signer", subjects.OpRoomGet, rawEnvelope(t, account, subj(subjects.OpRoomGet), getBody), bad, invalid},
		{"server key signer", subjects.OpRoomAdd, rawEnvelope(t, server, subj(subjects.OpRoomAdd), addBody), bad, invalid},
		{"operator key signer", subjects.OpRoomGet, rawEnvelope(t, operator, subj(subjects.OpRoomGet), getBody), bad, invalid},
		{"unknown envelope field", subjects.OpRoomGet, withField(subjects.OpRoomGet, getBody, "owner", "bob"), bad, invalid},
		{"envelope as array", subjects.OpRoomGet, []byte{0x97, 1, 1, 0xc4, 0, 0xa0, 0xc4, 0, 0xc4, 0, 0xc4, 0}, bad, invalid},
		{"unknown body field read", subjects.OpRoomGet, membertest.Signed(t, kp, subjects.OpRoomGet, bodyWith(api.RoomRequest{Room: "r1"}, "owner", "bob")), bad, invalid},
		{"unknown body field add", subjects.OpRoomAdd, membertest.Signed(t, kp, subjects.OpRoomAdd, bodyWith(api.AddMemberRequest{Room: "r1", Epoch: 1, Sealer: sealer,
			Member: api.SealedKey{Endpoint: "admin", Sealed: []byte("s")}}, "admin", true)), bad, invalid},
		{"unknown body field create", subjects.OpRoomCreate, membertest.Signed(t, kp, subjects.OpRoomCreate,
			bodyWith(api.CreateRoomRequest{ID: "r2", Subject: "chat.r2", Sealer: sealer, Members: []api.SealedKey{{Endpoint: "alice", Sealed: []byte("s")}}}, "owner", "bob")), bad, invalid},
		{"body of the wrong type", subjects.OpRoomGet, membertest.Signed(t, kp, subjects.OpRoomGet, membertest.Body(t, map[string]any{"room": 7})), bad, invalid},
		{"room subject with *", subjects.OpRoomCreate, membertest.Signed(t, kp, subjects.OpRoomCreate, create("r2", "chat.*")), bad, invalid},
		{"room subject with >", subjects.OpRoomCreate, membertest.Signed(t, kp, subjects.OpRoomCreate, create("r2", "chat.>")), bad, invalid},
		{"room subject with space", subjects.OpRoomCreate, membertest.Signed(t, kp, subjects.OpRoomCreate, create("r2", "chat ops")), bad, invalid},
		{"room subject with tab", subjects.OpRoomCreate, membertest.Signed(t, kp, subjects.OpRoomCreate, create("r2", "chat.\tops")), bad, invalid},
		{"room subject empty token", subjects.OpRoomCreate, membertest.Signed(t, kp, subjects.OpRoomCreate, create("r2", "chat..ops")), bad, invalid},
		{"room id with dot create", subjects.OpRoomCreate, membertest.Signed(t, kp, subjects.OpRoomCreate, create("r2.x", "chat.r2")), bad, invalid},
		{"room id with dot get", subjects.OpRoomGet, membertest.Signed(t, kp, subjects.OpRoomGet, membertest.Body(t, api.RoomRequest{Room: "r1.x"})), bad, invalid},
		{"room id with wildcard get", subjects.OpRoomGet, membertest.Signed(t, kp, subjects.OpRoomGet, membertest.Body(t, api.RoomRequest{Room: "r1.>"})), bad, invalid},
		{"member id with dot", subjects.OpRoomAdd, membertest.Signed(t, kp, subjects.OpRoomAdd, membertest.Body(t, api.AddMemberRequest{Room: "r1", Epoch: 1, Sealer: sealer,
			Member: api.SealedKey{Endpoint: "bob.x", Sealed: []byte("s")}})), bad, invalid},
		{"endpoint id with dot", subjects.OpIdentityGet, membertest.Signed(t, kp, subjects.OpIdentityGet, membertest.Body(t, api.EndpointRequest{Endpoint: "id.alice"})), bad, invalid},
		{"remove id with dot", subjects.OpRoomRemove, membertest.Signed(t, kp, subjects.OpRoomRemove, membertest.Body(t, api.RemoveMemberRequest{Room: "r1", Endpoint: "bob.x"})), bad, invalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.send(t, tt.op, tt.data, tt.code, tt.reason)
		})
	}

}
