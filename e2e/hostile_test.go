package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/subjects"
)

// subjectCounter counts the messages published on a subject filter, seen
// by a passive core-NATS subscriber. A publish to $KV.<bucket>.… is counted
// whether or not JetStream accepts it, so it counts write attempts, and
// $JS.API.> counts every JetStream API call (a KV read is one).
type subjectCounter struct {
	n    atomic.Int64 // counted
	seen atomic.Int64 // delivered to the callback, counted or not
	sub  *nats.Subscription
}

// freshnessProof reports whether subject is one of the reads the identity
// cache makes on a timer to prove it is current (service/cache.go: the
// bucket's last revision, the newest id./signer. revision); requests do not
// cause them.
func freshnessProof(subject string) bool {
	return strings.HasPrefix(subject, "$JS.API.STREAM.INFO.") ||
		(strings.HasPrefix(subject, "$JS.API.DIRECT.GET.") && strings.HasSuffix(subject, ".>"))
}

func countSubject(t *testing.T, nc *nats.Conn, filter string) *subjectCounter {
	t.Helper()
	c := &subjectCounter{}
	sub, err := nc.Subscribe(filter, func(m *nats.Msg) {
		if !freshnessProof(m.Subject) {
			c.n.Add(1)
		}
		c.seen.Add(1)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	c.sub = sub
	return c
}

// settle waits until every message published so far reached the counter:
// a flush round trip on the publishers and the counter's connection.
func (c *subjectCounter) settle(t *testing.T, conns ...*nats.Conn) int64 {
	t.Helper()
	for _, nc := range conns {
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	// Everything the server routed before the flush's PONG is now queued
	// for the callback: wait until the callback has taken and counted all.
	deadline := time.Now().Add(time.Minute)
	for {
		pending, _, err := c.sub.Pending()
		if err != nil {
			t.Fatal(err)
		}
		delivered, err := c.sub.Delivered()
		if err != nil {
			t.Fatal(err)
		}
		if pending == 0 && delivered == c.seen.Load() {
			return c.n.Load()
		}
		if time.Now().After(deadline) {
			t.Fatal("counter subscription never drained")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// flood sends data to subject copies times in all from conns, workers
// requests in flight per connection, and counts the replies by code.
func flood(t *testing.T, conns []*nats.Conn, workers, copies int, subject string, data []byte) (map[int]int, time.Duration) {
	t.Helper()
	var (
		mu     sync.Mutex
		codes  = map[int]int{}
		failed error
		next   atomic.Int64
		wg     sync.WaitGroup
	)
	start := time.Now()
	for _, nc := range conns {
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(copies) {
					m, err := nc.Request(subject, data, natstest.Within(3))
					mu.Lock()
					if err != nil {
						failed = err
					} else {
						code := 0
						if c := m.Header.Get(micro.ErrorCodeHeader); c != "" {
							code = atoiOr(c, -1)
						}
						codes[code]++
					}
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if failed != nil {
		t.Fatalf("flood request: %v", failed)
	}
	return codes, time.Since(start)
}

func atoiOr(s string, def int) int {
	n := 0
	for _, r := range s {
		if r < '0' || r > '9' {
			return def
		}
		n = n*10 + int(r-'0')
	}
	return n
}

// TestReplayFlood replays one captured read and one captured mutation at
// full rate from several connections. Not one copy is accepted, none
// causes a KV write attempt, and (answered from the replay cache) almost
// none a JetStream API call. The rejection rate is logged: docs/security.md
// records it.
func TestReplayFlood(t *testing.T) {
	s, admin := membertest.Start(t, service.Config{})
	alice := membertest.Member(t, s, admin, "alice")
	bob := membertest.Member(t, s, admin, "bob")
	carol := membertest.Member(t, s, admin, "carol")
	nc := natstest.Connect(t, s)
	ctx := natstest.Ctx(t, 3)
	_, key, err := alice.CreateRoom(ctx, "r1", "chat.r1", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	read := membertest.Signed(t, bob.Identity().Sign, subjects.OpRoomGet, membertest.Body(t, api.RoomRequest{Room: "r1"}))
	membertest.RequestOp(t, nc, subjects.OpRoomGet, read).Expect(t, 0, "")
	mutation := addRequest(t, alice, carol, "r1", key, membertest.Nonce(t))
	first := membertest.RequestOp(t, nc, subjects.OpRoomAdd, mutation)
	first.Expect(t, 0, "")

	conns := make([]*nats.Conn, 6)
	for i := range conns {
		conns[i] = natstest.Connect(t, s)
	}
	mon := natstest.Connect(t, s)
	// Few enough that a flood ends within the skew window on a loaded
	// machine: a copy sent after it would be refused as stale instead.
	const copies = 1500
	for _, tc := range []struct {
		name    string
		op      subjects.Op
		data    []byte
		allowed int // the only code a copy may get
	}{
		{"read", subjects.OpRoomGet, read, subjects.CodeUnauthorized},
		{"mutation", subjects.OpRoomAdd, mutation, subjects.CodeAlreadyApplied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			writes := countSubject(t, mon, "$KV."+subjects.DefaultBucket+".>")
			claims := countSubject(t, mon, subjects.ReadClaims(subjects.DefaultBucket)) // read claims
			apiCalls := countSubject(t, mon, "$JS.API.>")
			before := membertest.Dump(t, nc)
			nonces := len(membertest.NonceKeys(t, nc))
			w0, a0 := writes.settle(t, mon)+claims.settle(t, mon), apiCalls.settle(t, mon)

			codes, took := flood(t, conns, 4, copies, subjects.Subject(subjects.DefaultPrefix, tc.op), tc.data)

			w1, a1 := writes.settle(t, append(conns, mon)...)+claims.settle(t, mon), apiCalls.settle(t, append(conns, mon)...)
			if codes[0] != 0 {
				t.Fatalf("%d of %d replays accepted", codes[0], copies)
			}
			if codes[tc.allowed] != copies {
				t.Fatalf("reply codes %v, want all %d to be %d", codes, copies, tc.allowed)
			}
			if w1 != w0 {
				t.Fatalf("%d KV or read-claim write attempts during the flood, want 0", w1-w0)
			}
			// Background work (caches, stats) may call the API a few
			// times; one call per copy would be thousands.
			if a1-a0 > copies/100 {
				t.Fatalf("%d JetStream API calls for %d replays: the replay cache did not answer them", a1-a0, copies)
			}
			membertest.SameDump(t, before, membertest.Dump(t, nc))
			if n := len(membertest.NonceKeys(t, nc)); n != nonces {
				t.Fatalf("nonce keys %d → %d", nonces, n)
			}
			t.Logf("replay flood %s: %d copies from %d connections × 4 in flight refused in %s: %.0f rejections/s, %d KV writes, %d API calls",
				tc.name, copies, len(conns), took.Round(time.Millisecond), float64(copies)/took.Seconds(), w1-w0, a1-a0)
		})
	}
}

// TestRateLimitNoStarvation: one identity flooding past its limit gets 429
// with a retry hint and costs no nonce; another identity's requests all
// succeed meanwhile. The rate is so low that no token comes back during the
// test, so the outcome does not depend on the machine's speed.
func TestRateLimitNoStarvation(t *testing.T) {
	s, admin := membertest.Start(t, service.Config{RateLimit: 0.0001, RateBurst: 10})
	greedy := membertest.Member(t, s, admin, "greedy")
	polite := membertest.Member(t, s, admin, "polite")
	nc := natstest.Connect(t, s)
	nonces := len(membertest.NonceKeys(t, nc))

	var wg sync.WaitGroup
	var limited, ok atomic.Int64
	var hintMissing atomic.Bool
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				data := membertest.Signed(t, greedy.Identity().Sign, subjects.OpWhoami, membertest.Body(t, api.Empty{}))
				m, err := nc.Request(subjects.Subject(subjects.DefaultPrefix, subjects.OpWhoami), data, natstest.Within(3))
				if err != nil {
					continue
				}
				switch m.Header.Get(micro.ErrorCodeHeader) {
				case "":
					ok.Add(1)
				case "429":
					limited.Add(1)
					if atoiOr(m.Header.Get(subjects.HeaderRetryAfter), 0) <= 0 {
						hintMissing.Store(true)
					}
				}
			}
		}()
	}
	ctx := natstest.Ctx(t, 3)
	for i := range 10 {
		if _, err := polite.Whoami(ctx); err != nil {
			t.Fatalf("polite request %d while greedy floods: %v", i+1, err)
		}
	}
	wg.Wait()
	if ok.Load() != 10 || limited.Load() != 90 {
		t.Fatalf("greedy: %d accepted, %d limited; want its burst 10 and 90 × 429", ok.Load(), limited.Load())
	}
	if hintMissing.Load() {
		t.Fatal("a 429 without a positive retry hint")
	}
	if got := len(membertest.NonceKeys(t, nc)) - nonces; got != 20 {
		t.Fatalf("%d nonces claimed, want 20 (10 per identity): a 429 must not claim one", got)
	}
	if _, err := greedy.Whoami(ctx); !errors.Is(err, client.ErrRateLimited) {
		t.Fatalf("greedy through the client: %v, want ErrRateLimited", err)
	}
}

// lockedBuffer is an io.Writer safe for the concurrent handlers' logs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// secretForms lists the encodings a secret might leak in.
func secretForms(name string, b []byte) map[string]string {
	return map[string]string{
		name + " raw":       string(b),
		name + " hex":       hex.EncodeToString(b),
		name + " base64":    base64.StdEncoding.EncodeToString(b),
		name + " base64url": base64.RawURLEncoding.EncodeToString(b),
		name + " base64raw": base64.RawStdEncoding.EncodeToString(b),
	}
}

// TestSecretsNeverLogged runs a full flow — register, create, add, fetch
// keys, rekey, remove, leave, refused requests, a 429, audit — with the
// service logging at debug level, then scans the logs, every error text
// and the micro stats for every seed and room key used, in raw, hex and
// base64 forms.
func TestSecretsNeverLogged(t *testing.T) {
	s := natstest.Server(t)
	logs := &lockedBuffer{}
	skp := membertest.ServiceKey()
	svc := membertest.Service(t, s, service.Config{
		ServiceKey: skp, RateLimit: 0.0001, RateBurst: 40,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	admin := membertest.Admin(t, s)
	alice := membertest.Member(t, s, admin, "alice")
	bob := membertest.Member(t, s, admin, "bob")
	carol := membertest.Member(t, s, admin, "carol")
	ctx := natstest.Ctx(t, 6)

	var errTexts []string
	note := func(err error) {
		if err != nil {
			errTexts = append(errTexts, err.Error())
		}
	}
	var roomKeys [][]byte
	_, k1, err := alice.CreateRoom(ctx, "r1", "chat.r1", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	roomKeys = append(roomKeys, k1)
	if _, err := alice.AddMember(ctx, "r1", "carol"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{alice, bob, carol} {
		k, _, err := c.Key(ctx, "r1", 0)
		if err != nil {
			t.Fatal(err)
		}
		roomKeys = append(roomKeys, k)
	}
	if _, err := alice.RemoveMember(ctx, "r1", "carol"); err != nil {
		t.Fatal(err)
	}
	_, k2, err := alice.Rekey(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	roomKeys = append(roomKeys, k2)
	if _, err := bob.Leave(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	_, _, err = carol.Key(ctx, "r1", 2)
	note(err) // forbidden: removed before epoch 2
	_, err = carol.Room(ctx, "r1")
	note(err)
	_, err = bob.Identities(ctx, "", 0)
	note(err)
	if _, err := alice.Audit(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	// Hand-made bad requests: stale, bad signature, unknown signer.
	nc := natstest.Connect(t, s)
	subject := subjects.Subject(subjects.DefaultPrefix, subjects.OpWhoami)
	body := membertest.Body(t, api.Empty{})
	stale := membertest.Envelope(t, bob.Identity().Sign, subject, time.Now().Add(-time.Hour), membertest.Nonce(t), body)
	membertest.Request(t, nc, subject, membertest.Marshal(t, stale))
	bad := membertest.Envelope(t, bob.Identity().Sign, subject, time.Now(), membertest.Nonce(t), body)
	bad.Sig[0] ^= 1
	membertest.Request(t, nc, subject, membertest.Marshal(t, bad))
	stranger, _ := identity.New("stranger")
	membertest.Request(t, nc, subject, membertest.Signed(t, stranger.Sign, subjects.OpWhoami, body))
	for range 45 {
		_, err := bob.Whoami(ctx)
		note(err) // the last ones are 429
	}
	if !strings.Contains(strings.Join(errTexts, "\n"), "429") {
		t.Fatal("the flow never hit the rate limit: the 429 path went unscanned")
	}

	stats, err := json.Marshal(svc.Micro().Stats())
	if err != nil {
		t.Fatal(err)
	}
	haystack := logs.String() + "\n" + strings.Join(errTexts, "\n") + "\n" + string(stats)
	if !strings.Contains(logs.String(), "level=DEBUG") {
		t.Fatal("no debug lines were logged: the scan would prove nothing")
	}

	secrets := map[string]string{}
	add := func(name string, b []byte) {
		for k, v := range secretForms(name, b) {
			secrets[k] = v
		}
	}
	seed, _ := skp.Seed()
	add("service seed", seed)
	for _, c := range []*client.Client{admin, alice, bob, carol} {
		id := c.Identity()
		ss, _ := id.Sign.Seed()
		xs, _ := id.XKey.Seed()
		add(id.Endpoint+" sign seed", ss)
		add(id.Endpoint+" xkey seed", xs)
		// The raw Ed25519/X25519 private keys behind the seeds.
		if _, raw, err := nkeys.DecodeSeed(ss); err == nil {
			add(id.Endpoint+" sign private", raw)
		}
		if _, raw, err := nkeys.DecodeSeed(xs); err == nil {
			add(id.Endpoint+" xkey private", raw)
		}
	}
	ss, _ := stranger.Sign.Seed()
	add("stranger sign seed", ss)
	for i, k := range roomKeys {
		add("room key "+string(rune('0'+i)), k)
	}
	var leaked []string
	for name, v := range secrets {
		if len(v) >= 16 && strings.Contains(haystack, v) {
			leaked = append(leaked, name)
		}
	}
	if len(leaked) > 0 {
		t.Fatalf("secrets found in logs, errors or stats: %v", leaked)
	}
	t.Logf("scanned %d bytes of logs, %d error texts and the stats for %d secret forms", len(logs.String()), len(errTexts), len(secrets))
}

// TestReplayFloodWithoutCache is the baseline for TestReplayFlood: with the
// replay cache disabled the KV claim alone still refuses every copy, but
// each copy costs a signature check and a KV write attempt (a refused
// Create) — which shows that the counter would catch them, and what the
// cache saves. The rate limit is off too: it would otherwise answer most
// copies 429 after their signature check (a second, costlier line of
// defence). Its rate is logged for docs/security.md.
func TestReplayFloodWithoutCache(t *testing.T) {
	s, admin := membertest.Start(t, service.Config{ReplayCache: -1, RateLimit: -1})
	bob := membertest.Member(t, s, admin, "bob")
	nc := natstest.Connect(t, s)
	read := membertest.Signed(t, bob.Identity().Sign, subjects.OpWhoami, membertest.Body(t, api.Empty{}))
	membertest.RequestOp(t, nc, subjects.OpWhoami, read).Expect(t, 0, "")
	conns := make([]*nats.Conn, 6)
	for i := range conns {
		conns[i] = natstest.Connect(t, s)
	}
	mon := natstest.Connect(t, s)
	writes := countSubject(t, mon, subjects.ReadClaims(subjects.DefaultBucket)) // read claims
	w0 := writes.settle(t, mon)
	// Few enough that the flood ends within the skew window on a loaded
	// machine (uncached copies cost a signature check and a claim each):
	// a copy sent after it would be refused as stale, without a claim.
	const copies = 1000
	codes, took := flood(t, conns, 4, copies, subjects.Subject(subjects.DefaultPrefix, subjects.OpWhoami), read)
	w1 := writes.settle(t, append(conns, mon)...)
	if codes[subjects.CodeUnauthorized] != copies {
		t.Fatalf("reply codes %v, want all %d refused 401", codes, copies)
	}
	if w1-w0 < copies {
		t.Fatalf("%d claim attempts for %d uncached replays, want one each", w1-w0, copies)
	}
	t.Logf("replay flood without cache: %d copies refused in %s: %.0f rejections/s, %d claim attempts",
		copies, took.Round(time.Millisecond), float64(copies)/took.Seconds(), w1-w0)
}
