package main

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nkeys"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/envelope"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/subjects"
)

// The signed echo baseline ("secho"): a room get answered by an endpoint
// that does everything the service does for a read except touch the store.
// It refuses oversized requests, decodes the envelope with the service's
// decoder, checks ts, body hash and signature with the envelope package's
// own checks (the calls the service's pipeline makes), looks the signer up
// in memory (the service's identity cache is a map lookup too), decodes the
// body strictly, and signs its reply with a server key as the service does
// (docs/protocol.md §16), so that the client verifies it exactly as a
// service reply. The clients measuring it are the bench clients' own
// identities, signing through the client package. What is left between
// this row and "read" is the store: the nonce claim and the reads.
//
// Like the service it runs --workers micro instances in one queue group,
// so the same number of requests are handled at once.

type signedEcho struct {
	signer  envelope.KeySigner
	pub     string
	mu      sync.RWMutex
	signers map[string]bool // public signing keys of the identities it answers
}

// startSignedEcho serves room.get under prefix on nc with workers micro
// instances, for the identities whose signing keys are in signers.
func startSignedEcho(nc *nats.Conn, prefix string, workers int, signers []string) (stop func(), err error) {
	kp, err := nkeys.CreateServer()
	if err != nil {
		return nil, err
	}
	se := &signedEcho{signers: map[string]bool{}}
	if se.signer, err = envelope.NewKeySigner(kp); err != nil {
		return nil, err
	}
	se.pub, _ = kp.PublicKey()
	for _, s := range signers {
		se.signers[s] = true
	}
	var svcs []micro.Service
	stop = func() {
		for _, s := range svcs {
			_ = s.Stop()
		}
	}
	for i := range max(workers, 1) {
		svc, err := micro.AddService(nc, micro.Config{Name: "membench_signed_echo", Version: "1.0.0",
			QueueGroup: "membench_signed_echo", Metadata: map[string]string{"worker": strconv.Itoa(i)}})
		if err != nil {
			stop()
			return nil, err
		}
		svcs = append(svcs, svc)
		op := subjects.OpRoomGet
		if err := svc.AddEndpoint(op.EndpointName(), micro.HandlerFunc(se.handle),
			micro.WithEndpointSubject(subjects.Subject(prefix, op))); err != nil {
			stop()
			return nil, err
		}
	}
	return stop, nil
}

// handle answers one room get: the service's checks, no store.
func (se *signedEcho) handle(r micro.Request) {
	now := time.Now()
	code, reason, body, nonce := se.answer(r, now)
	sig, _ := se.signer.Sign(api.ReplyCanonical(nonce, code, reason, body))
	hdr := micro.Headers{
		subjects.HeaderServiceKey: []string{se.pub},
		subjects.HeaderReplySig:   []string{base64.RawURLEncoding.EncodeToString(sig)},
	}
	if code == subjects.CodeOK {
		_ = r.Respond(body, micro.WithHeaders(hdr))
		return
	}
	hdr[subjects.HeaderReason] = []string{reason}
	_ = r.Error(strconv.Itoa(code), reason, nil, micro.WithHeaders(hdr))
}

// answer checks the request and builds the reply body; a refusal is the
// error kind the service would answer.
func (se *signedEcho) answer(r micro.Request, now time.Time) (code int, reason string, body, nonce []byte) {
	fail := func(k api.Kind) (int, string, []byte, []byte) { return k.Code(), k.String(), nil, nonce }
	data := r.Data()
	if len(data) > service.DefaultMaxRequest {
		return fail(api.KindTooLarge)
	}
	env, err := envelope.Decode(data)
	if err != nil {
		nonce = envelope.RequestNonce(data)
		return fail(api.KindInvalid)
	}
	nonce = env.Nonce
	switch {
	case env.CheckTime(now, service.DefaultSkew) != nil:
		return fail(api.KindUnauthenticated)
	case env.CheckBodyHash() != nil:
		return fail(api.KindInvalid)
	case env.CheckSignature(r.Subject()) != nil:
		return fail(api.KindUnauthenticated)
	}
	se.mu.RLock()
	known := se.signers[env.Signer]
	se.mu.RUnlock()
	if !known {
		return fail(api.KindUnauthenticated)
	}
	var req api.RoomRequest
	if err := envelope.Unmarshal(env.Body, &req); err != nil {
		return fail(api.KindInvalid)
	}
	ms := now.UnixMilli()
	body, err = msgpack.Marshal(&api.Room{ID: req.Room, Subject: "bench." + req.Room, Owner: "owner",
		OwnerKey: env.Signer, Epoch: 1, Members: 4, Created: ms, Updated: ms})
	if err != nil {
		return fail(api.KindInternal)
	}
	return subjects.CodeOK, "", body, nonce
}

// signedEchoClients starts the signed echo for the bench clients and
// returns one client per bench client that reads rooms from it.
func (e *env) signedEchoClients() ([]*client.Client, error) {
	prefix := "membench." + e.run + ".secho"
	signers := make([]string, len(e.clients))
	for i, c := range e.clients {
		pub, err := c.Identity().Public()
		if err != nil {
			return nil, err
		}
		signers[i] = pub.SignKey
	}
	nc, err := nats.Connect(e.url, nats.Name("memberbench-signed-echo"))
	if err != nil {
		return nil, err
	}
	e.closers = append(e.closers, nc.Close)
	stop, err := startSignedEcho(nc, prefix, e.o.workers, signers)
	if err != nil {
		return nil, fmt.Errorf("signed echo: %w", err)
	}
	e.closers = append(e.closers, stop)
	if err := nc.Flush(); err != nil { // its subscriptions are at the server before the first call
		return nil, err
	}
	opts := []client.Option{client.WithPrefix(prefix), client.WithRetries(0)}
	if e.o.unverified {
		opts = append(opts, client.WithUnverifiedReplies())
	}
	out := make([]*client.Client, len(e.clients))
	for i, c := range e.clients {
		out[i] = client.New(e.conns[i], c.Identity(), opts...)
	}
	return out, nil
}
