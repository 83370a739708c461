package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/subjects"
)

// TestStatsThroughNatsCLI drives every rejection reason once against two
// replicas and reads the counters back with `nats micro stats`, as an
// operator would; `nats micro ping` must answer from both replicas.
func TestStatsThroughNatsCLI(t *testing.T) {
	s := natstest.Server(t)
	cfg := service.Config{MaxRequest: 2048, RateLimit: 5, RateBurst: 5, IdentityMaxStale: -1}
	membertest.Service(t, s, cfg)
	membertest.Service(t, s, cfg)
	admin := membertest.Admin(t, s)
	ctx := natstest.Ctx(t, 3)
	nc := natstest.Connect(t, s)

	var carolKP nkeys.KeyPair
	xkp, _ := nkeys.CreateCurveKeys()
	xpub, _ := xkp.PublicKey()
	for _, name := range []string{"carol", "flood"} {
		kp := keyPair(t)
		pub, _ := kp.PublicKey()
		if name == "carol" {
			carolKP = kp
		}
		if _, err := admin.Register(ctx, api.PublicKeys{Endpoint: name, SignKey: pub, XKey: xpub}, false); err != nil {
			t.Fatal(err)
		}
		if name == "flood" {
			// A signer over its rate: 429 rate_limited.
			for range 20 {
				membertest.RequestOp(t, nc, subjects.OpWhoami, membertest.Signed(t, kp, subjects.OpWhoami, membertest.Body(t, api.Empty{})))
			}
		}
	}
	get := func(room string) []byte { return membertest.Body(t, api.RoomRequest{Room: room}) }
	roomGet := subjects.Subject(subjects.DefaultPrefix, subjects.OpRoomGet)
	now := time.Now()

	send := func(data []byte) { membertest.Request(t, nc, roomGet, data) }
	send(nil)                                                                                                                     // unsigned
	send([]byte("hello"))                                                                                                         // malformed
	send(make([]byte, 4096))                                                                                                      // too_large
	send(membertest.Marshal(t, membertest.Envelope(t, carolKP, roomGet, now.Add(-5*time.Minute), membertest.Nonce(t), get("r")))) // stale
	e := membertest.Envelope(t, carolKP, roomGet, now, membertest.Nonce(t), get("r"))
	e.Body = get("other")
	send(membertest.Marshal(t, e)) // bad_body_hash
	e = membertest.Envelope(t, carolKP, roomGet, now, membertest.Nonce(t), get("r"))
	e.Sig[0] ^= 1
	send(membertest.Marshal(t, e))                                                // bad_signature
	send(membertest.Signed(t, keyPair(t), subjects.OpRoomGet, get("r")))          // unknown_signer
	replayed := membertest.Signed(t, carolKP, subjects.OpRoomGet, get("nowhere")) // not_found
	send(replayed)
	send(replayed) // replay
	if _, err := admin.Disable(ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	send(membertest.Signed(t, carolKP, subjects.OpRoomGet, get("r"))) // disabled
	daveKP := keyPair(t)
	davePub, _ := daveKP.PublicKey()
	if _, err := admin.Register(ctx, api.PublicKeys{Endpoint: "dave", SignKey: davePub, XKey: xpub}, false); err != nil {
		t.Fatal(err)
	}
	membertest.RequestOp(t, nc, subjects.OpIdentityList, membertest.Signed(t, daveKP, subjects.OpIdentityList, membertest.Body(t, api.PageRequest{}))) // forbidden

	// A room with a removed member owes a rekey; the rekey endpoint's
	// stats count it (refreshed in the background, so poll).
	if _, _, err := admin.CreateRoom(ctx, "r1", "chat.r1", []string{"dave"}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RemoveMember(ctx, "r1", "dave"); err != nil {
		t.Fatal(err)
	}
	owed := -1
	for deadline := time.Now().Add(20 * time.Second); owed != 1 && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		for _, inst := range readStats(t, s) {
			for _, ep := range inst.Endpoints {
				var d struct {
					Owed *int `json:"rooms_owing_rekey"`
				}
				if ep.Name == subjects.OpRoomRekey.EndpointName() && json.Unmarshal(ep.Data, &d) == nil && d.Owed != nil {
					owed = *d.Owed
				}
			}
		}
	}
	if owed != 1 {
		t.Fatalf("rooms_owing_rekey = %d, want 1", owed)
	}

	// Member pages count where they came from: the room index once its
	// watch has loaded, the store before. Every page is counted once.
	for calls := 1; ; calls++ {
		if _, err := admin.Members(ctx, "r1", "", 0); err != nil {
			t.Fatal(err)
		}
		index, store := memberPageCounts(readStats(t, s))
		if index+store != calls {
			t.Fatalf("room_members stats count %d pages from the index and %d from the store after %d calls", index, store, calls)
		}
		if index > 0 {
			break
		}
		if calls == 100 {
			t.Fatalf("no member page served from the room index in %d calls (%d from the store)", calls, store)
		}
		time.Sleep(50 * time.Millisecond)
	}

	if err := s.ShutdownJetStream(); err != nil {
		t.Fatal(err)
	}
	membertest.RequestOp(t, nc, subjects.OpIdentityList, membertest.Signed(t, daveKP, subjects.OpIdentityList, membertest.Body(t, api.PageRequest{}))) // unavailable

	stats := readStats(t, s)
	if len(stats) != 2 {
		t.Fatalf("micro stats lists %d instances, want 2", len(stats))
	}
	got := map[string]int{}
	for _, inst := range perProcess(t, stats) {
		for _, ep := range inst.Endpoints {
			if len(ep.Data) == 0 || string(ep.Data) == "null" {
				continue
			}
			var d struct {
				Rejections map[string]int `json:"rejections"`
			}
			if err := json.Unmarshal(ep.Data, &d); err != nil {
				t.Fatalf("endpoint %s data: %v", ep.Name, err)
			}
			for reason, n := range d.Rejections {
				got[reason] += n
			}
		}
	}
	for _, reason := range []string{"unsigned", "malformed", "too_large", "stale", "bad_body_hash",
		"bad_signature", "unknown_signer", "replay", "disabled", "not_found", "forbidden", "unavailable"} {
		if got[reason] != 1 {
			t.Errorf("rejections[%s] = %d, want 1 (all: %v)", reason, got[reason], got)
		}
	}
	if got["rate_limited"] < 1 {
		t.Errorf("rejections[rate_limited] = %d, want at least 1", got["rate_limited"])
	}

	out, errOut, err := natstest.RunNats(t, s, nil, "micro", "ping", subjects.ServiceName)
	if err != nil {
		t.Fatalf("nats micro ping: %v\n%s", err, errOut)
	}
	ids := map[string]bool{}
	for _, inst := range stats {
		ids[inst.ID] = true
	}
	answered := 0
	for id := range ids {
		if strings.Contains(out, id) {
			answered++
		}
	}
	if answered != 2 {
		t.Fatalf("nats micro ping answered for %d of 2 instances:\n%s", answered, out)
	}
}

// readStats runs `nats micro stats membership --json`.
func readStats(t *testing.T, s *server.Server) []micro.Stats {
	t.Helper()
	out, errOut, err := natstest.RunNats(t, s, nil, "micro", "stats", subjects.ServiceName, "--json")
	if err != nil {
		t.Fatalf("nats micro stats: %v\n%s", err, errOut)
	}
	var stats []micro.Stats
	if err := json.Unmarshal([]byte(out), &stats); err != nil {
		t.Fatalf("decode stats: %v\n%s", err, out)
	}
	return stats
}

// perProcess keeps one instance per replica ("replica" metadata): every
// instance reports its replica's custom stats data. With t, every instance
// must carry that data.
func perProcess(t *testing.T, stats []micro.Stats) []micro.Stats {
	seen := map[string]bool{}
	var out []micro.Stats
	for _, inst := range stats {
		if t != nil {
			for _, ep := range inst.Endpoints {
				if len(ep.Data) == 0 || string(ep.Data) == "null" {
					t.Fatalf("instance %s (worker %s): no custom stats data on %s", inst.ID, inst.Metadata["worker"], ep.Name)
				}
			}
		}
		p := inst.Metadata["replica"]
		if !seen[p] {
			seen[p] = true
			out = append(out, inst)
		}
	}
	return out
}

// memberPageCounts sums the room_members page counters over all instances:
// pages served from the room index and pages listed from the store.
func memberPageCounts(stats []micro.Stats) (index, store int) {
	for _, inst := range perProcess(nil, stats) {
		for _, ep := range inst.Endpoints {
			var c struct {
				Index int `json:"index_pages"`
				Store int `json:"store_pages"`
			}
			if ep.Name == subjects.OpRoomMembers.EndpointName() && json.Unmarshal(ep.Data, &c) == nil {
				index += c.Index
				store += c.Store
			}
		}
	}
	return index, store
}

func keyPair(t *testing.T) nkeys.KeyPair {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}
