package e2e

import (
	"encoding/json"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/envelope"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/subjects"
)

// TestNatsCLIMicro inspects the service with the real nats CLI: micro ls,
// info and stats list the service and every endpoint of protocol v1.
func TestNatsCLIMicro(t *testing.T) {
	s := natstest.Server(t)
	membertest.Service(t, s, service.Config{})
	natstest.NatsCLI(t)

	wantEndpoints := func(t *testing.T, what string, names []string) {
		t.Helper()
		have := map[string]bool{}
		for _, n := range names {
			have[n] = true
		}
		for _, o := range api.Ops {
			if !have[o.Op.EndpointName()] {
				t.Errorf("%s lacks endpoint %s (has %v)", what, o.Op.EndpointName(), names)
			}
		}
		if len(names) != len(api.Ops) {
			t.Errorf("%s lists %d endpoints, want %d", what, len(names), len(api.Ops))
		}
	}

	t.Run("ls", func(t *testing.T) {
		out, errOut, err := natstest.RunNats(t, s, nil, "micro", "ls", "--json")
		if err != nil {
			t.Fatalf("nats micro ls: %v\n%s", err, errOut)
		}
		var infos []micro.Info
		if err := json.Unmarshal([]byte(out), &infos); err != nil {
			t.Fatalf("decode micro ls --json: %v\n%s", err, out)
		}
		if len(infos) != 1 || infos[0].Name != subjects.ServiceName {
			t.Fatalf("micro ls = %+v, want one %s instance", infos, subjects.ServiceName)
		}
		var names []string
		for _, e := range infos[0].Endpoints {
			names = append(names, e.Name)
		}
		wantEndpoints(t, "micro ls", names)
	})

	t.Run("info", func(t *testing.T) {
		out, errOut, err := natstest.RunNats(t, s, nil, "micro", "info", subjects.ServiceName, "--json")
		if err != nil {
			t.Fatalf("nats micro info: %v\n%s", err, errOut)
		}
		var got struct {
			Info  micro.Info  `json:"info"`
			Stats micro.Stats `json:"stats"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("decode micro info --json: %v\n%s", err, out)
		}
		if got.Info.Name != subjects.ServiceName || got.Info.Metadata["protocol"] != subjects.ProtocolVersion {
			t.Fatalf("micro info = %+v", got.Info)
		}
		var names []string
		for _, e := range got.Info.Endpoints {
			names = append(names, e.Name)
			op := subjects.Op("")
			for _, o := range api.Ops {
				if o.Op.EndpointName() == e.Name {
					op = o.Op
				}
			}
			if want := subjects.Subject(subjects.DefaultPrefix, op); e.Subject != want {
				t.Errorf("endpoint %s subject %q, want %q", e.Name, e.Subject, want)
			}
			if e.QueueGroup != subjects.DefaultQueue {
				t.Errorf("endpoint %s queue group %q, want %q", e.Name, e.QueueGroup, subjects.DefaultQueue)
			}
		}
		wantEndpoints(t, "micro info", names)
	})

	t.Run("stats", func(t *testing.T) {
		// One rejected request first, so stats have something to count.
		membertest.RequestOp(t, natstest.Connect(t, s), subjects.OpRoomGet, []byte("hello")).
			Expect(t, subjects.CodeBadRequest, api.KindInvalid.Reason())
		out, errOut, err := natstest.RunNats(t, s, nil, "micro", "stats", subjects.ServiceName, "--json")
		if err != nil {
			t.Fatalf("nats micro stats: %v\n%s", err, errOut)
		}
		var stats []micro.Stats
		if err := json.Unmarshal([]byte(out), &stats); err != nil {
			t.Fatalf("decode micro stats --json: %v\n%s", err, out)
		}
		if len(stats) != 1 || stats[0].Name != subjects.ServiceName {
			t.Fatalf("micro stats = %+v", stats)
		}
		var names []string
		for _, e := range stats[0].Endpoints {
			names = append(names, e.Name)
			if e.Name == subjects.OpRoomGet.EndpointName() && (e.NumRequests != 1 || e.NumErrors != 1) {
				t.Errorf("room_get stats: %d requests %d errors, want 1 and 1", e.NumRequests, e.NumErrors)
			}
		}
		wantEndpoints(t, "micro stats", names)
	})
}

var errCodeLine = regexp.MustCompile(regexp.QuoteMeta(micro.ErrorCodeHeader) + `: (\d+)`)

// TestNatsCLIRequest sends requests the service must refuse with the nats
// CLI and reads the error code from its printed headers. Codes observed:
// garbage that is not a msgpack map is 400 (malformed); an empty map or an
// envelope with a zero signature is 401 (unsigned / bad signature).
func TestNatsCLIRequest(t *testing.T) {
	s := natstest.Server(t)
	membertest.Service(t, s, service.Config{})
	subject := subjects.Subject(subjects.DefaultPrefix, subjects.OpRoomGet)

	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	zeroSig := membertest.Envelope(t, kp, subject, time.Now(), membertest.Nonce(t), membertest.Body(t, api.RoomRequest{Room: "r1"}))
	zeroSig.Sig = make([]byte, envelope.SigSize)

	tests := []struct {
		name  string
		arg   string // body as an argument
		stdin []byte // or as stdin
		code  int
	}{
		{name: "unsigned text", arg: "hello", code: subjects.CodeBadRequest},
		{name: "empty msgpack map", stdin: []byte{0x80}, code: subjects.CodeUnauthorized},
		{name: "zero signature", stdin: membertest.Marshal(t, zeroSig), code: subjects.CodeUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"req", "--no-templates", subject}
			if tt.stdin == nil {
				args = append(args, tt.arg)
			} else {
				args = append(args, "--force-stdin")
			}
			out, errOut, err := natstest.RunNats(t, s, tt.stdin, args...)
			if err != nil {
				t.Fatalf("nats req: %v\n%s%s", err, out, errOut)
			}
			m := errCodeLine.FindStringSubmatch(out + errOut)
			if m == nil {
				t.Fatalf("no %s header in output:\n%s%s", micro.ErrorCodeHeader, out, errOut)
			}
			if code, _ := strconv.Atoi(m[1]); code != tt.code {
				t.Fatalf("nats req printed %s %d, want %d:\n%s%s", micro.ErrorCodeHeader, code, tt.code, out, errOut)
			}
		})
	}
}
