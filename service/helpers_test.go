package service_test

import (
	"crypto/rand"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nkeys"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/envelope"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/store"
	"github.com/unibus/membership/subjects"
)

// env is a test bed: a server, a service replica, the admin client and a
// raw connection for hand-made requests.
type env struct {
	s     *server.Server
	svc   *service.Service
	admin *client.Client
	nc    *nats.Conn
	st    *store.Store
	cfg   service.Config // as validated: defaults filled in
	given service.Config // as passed to newEnv
}

func newEnv(t *testing.T, cfg service.Config) *env {
	t.Helper()
	s := natstest.Server(t)
	e := &env{s: s, svc: membertest.Service(t, s, cfg), admin: membertest.Admin(t, s), nc: natstest.Connect(t, s), cfg: cfg, given: cfg}
	e.st = membertest.Store(t, e.nc)
	if err := e.cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) subject(op subjects.Op) string { return subjects.Subject(e.cfg.Prefix, op) }

// register registers a fresh non-admin identity through the admin.
func (e *env) register(t *testing.T, endpoint string) *identity.Identity {
	t.Helper()
	id, err := identity.New(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := id.Public()
	if _, err := e.admin.Register(natstest.Ctx(t, 2), pub, false); err != nil {
		t.Fatalf("register %s: %v", endpoint, err)
	}
	return id
}

// signOpts shape a hand-made envelope.
type signOpts struct {
	ts      time.Time
	nonce   []byte
	subject string // signed-for subject, if not the one sent to
	after   func(*envelope.Envelope)
}

// sign builds signed request bytes for body sent to subject.
func sign(t *testing.T, kp nkeys.KeyPair, subject string, body any, o signOpts) []byte {
	t.Helper()
	b, err := msgpack.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	if o.ts.IsZero() {
		o.ts = time.Now()
	}
	if o.nonce == nil {
		o.nonce = newNonce(t)
	}
	if o.subject == "" {
		o.subject = subject
	}
	en, err := envelope.Sign(kp, o.subject, o.ts, o.nonce, b)
	if err != nil {
		t.Fatal(err)
	}
	if o.after != nil {
		o.after(en)
	}
	data, err := en.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func newNonce(t *testing.T) []byte {
	t.Helper()
	n := make([]byte, envelope.NonceSize)
	if _, err := rand.Read(n); err != nil {
		t.Fatal(err)
	}
	return n
}

// reply is a service answer: code 0 means success.
type reply struct {
	code   int
	kind   api.Kind
	data   []byte
	header nats.Header
}

func request(t *testing.T, nc *nats.Conn, subject string, data []byte) reply {
	t.Helper()
	m, err := nc.Request(subject, data, 10*time.Second)
	if err != nil {
		t.Fatalf("request %s: %v", subject, err)
	}
	r := reply{data: m.Data, header: m.Header}
	if c := m.Header.Get(micro.ErrorCodeHeader); c != "" {
		r.code, _ = strconv.Atoi(c)
		r.kind = api.KindFromReason(m.Header.Get(subjects.HeaderReason))
	}
	return r
}

// expect fails unless r is an error of kind want (KindOther: success) and
// its code is want's code.
func (r reply) expect(t *testing.T, want api.Kind) {
	t.Helper()
	if want == api.KindOther {
		if r.code != 0 {
			t.Fatalf("got %d %s (%s), want success", r.code, r.kind, r.header.Get(micro.ErrorHeader))
		}
		return
	}
	if r.kind != want || r.code != want.Code() {
		t.Fatalf("got code %d kind %s (%s), want %d %s", r.code, r.kind, r.header.Get(micro.ErrorHeader), want.Code(), want)
	}
}

// rejections reads an endpoint's rejection counters from the service's
// micro stats.
func rejections(t *testing.T, svc *service.Service, op subjects.Op) map[string]int {
	t.Helper()
	for _, ep := range svc.Micro().Stats().Endpoints {
		if ep.Name != op.EndpointName() {
			continue
		}
		var d struct {
			Rejections map[string]int `json:"rejections"`
		}
		if err := json.Unmarshal(ep.Data, &d); err != nil {
			t.Fatalf("stats of %s: %v", op, err)
		}
		return d.Rejections
	}
	t.Fatalf("no stats for %s", op)
	return nil
}

// keyCount counts the live keys under prefix.
func keyCount(t *testing.T, st *store.Store, prefix string) int {
	t.Helper()
	keys, err := st.Keys(natstest.Ctx(t, 2), prefix)
	if err != nil {
		t.Fatal(err)
	}
	return len(keys)
}

// nonceCount counts the claimed nonces: mutations' keys in the state bucket
// and reads' claims in the read-claims stream.
func nonceCount(t *testing.T, st *store.Store) int {
	t.Helper()
	reads, err := st.ReadClaims(natstest.Ctx(t, 2))
	if err != nil {
		t.Fatal(err)
	}
	return keyCount(t, st, "nonce.") + reads
}

// replica starts another service replica in the same queue group.
func (e *env) replica(t *testing.T) *service.Service {
	t.Helper()
	return membertest.Service(t, e.s, e.given)
}

// newUser returns a fresh nkeys user key pair and its public key.
func newUser(t *testing.T) (nkeys.KeyPair, string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	return kp, pub
}

// newXKey returns a fresh curve public key.
func newXKey(t *testing.T) string {
	t.Helper()
	kp, err := nkeys.CreateCurveKeys()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	return pub
}

// statInt reads one integer field of an endpoint's stats data.
func statInt(t *testing.T, data json.RawMessage, field string) int {
	t.Helper()
	return natstest.StatInt(t, data, field)
}
