package client_test

import (
	"encoding/hex"
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/subjects"
)

// The reply-signature test vectors of docs/protocol.md §16: a server key
// whose raw seed is the bytes 1…32, a request nonce of the bytes 0…23.
const (
	vectorSeed = "SNAACAQDAQCQMBYIBEFAWDANBYHRAEISCMKBKFQXDAMRUGY4DUPB6IHBB4"
	vectorPub  = "NB43KVROR7TFJ6KAPCYRF2FJROTZAH4FHLTJLPWX4DRZCC5NASLGJYZP"
)

var replyVectors = []struct {
	name      string
	code      int
	reason    string
	body      string // hex
	canonical string // hex
	sig       string // unpadded base64url
}{
	{"success", 200, "", "81a4726f6f6da27231",
		"0000001a756e696275732d6d656d626572736869702d7265706c792d763100000018000102030405060708090a0b0c0d0e0f1011121314151617000000c80000000000000020349fd37b4bc0bba1274d2ad84f3f92e302403efde62ef7e00348096b7f6d1a68",
		"RuR2N8Y-fdX0oSMyYkOVkTOVFVgy08oDwf9lUTVdfrvXTsFJN2WsyKDBStVGrIc37AzdAqPCkDagGihsYE5rCQ"},
	{"replay error", 401, "replay", "",
		"0000001a756e696275732d6d656d626572736869702d7265706c792d763100000018000102030405060708090a0b0c0d0e0f101112131415161700000191000000067265706c617900000020e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		"iVE-2VtqpIZ-tni33IX1BS-aIeSt9QxvWg8_OYs1K2m5lwG1Q1jlUoFGhGXDu5U0yU2LTcZ-Hzl5PT3qJBjmAA"},
}

func vectorNonce() []byte {
	n := make([]byte, 24)
	for i := range n {
		n[i] = byte(i)
	}
	return n
}

func TestReplyVectors(t *testing.T) {
	kp, err := nkeys.FromSeed([]byte(vectorSeed))
	if err != nil {
		t.Fatal(err)
	}
	if pub, _ := kp.PublicKey(); pub != vectorPub {
		t.Fatalf("public key %s, want %s", pub, vectorPub)
	}
	verifier, _ := nkeys.FromPublicKey(vectorPub)
	for _, v := range replyVectors {
		t.Run(v.name, func(t *testing.T) {
			body, _ := hex.DecodeString(v.body)
			if got := hex.EncodeToString(api.ReplyCanonical(vectorNonce(), v.code, v.reason, body)); got != v.canonical {
				t.Fatalf("canonical\n got %s\nwant %s", got, v.canonical)
			}
			msg := &nats.Msg{Data: body, Header: nats.Header{}}
			msg.Header.Set(subjects.HeaderReplySig, v.sig)
			if v.code != subjects.CodeOK {
				msg.Header.Set(micro.ErrorCodeHeader, "401")
				msg.Header.Set(subjects.HeaderReason, v.reason)
			}
			if err := client.VerifyReply(verifier, vectorNonce(), msg); err != nil {
				t.Fatalf("vector does not verify: %v", err)
			}
			// Each field is bound: change one and it fails.
			for name, mut := range map[string]func(m *nats.Msg) []byte{
				"nonce": func(m *nats.Msg) []byte { n := vectorNonce(); n[0] ^= 1; return n },
				"body":  func(m *nats.Msg) []byte { m.Data = append([]byte{0}, m.Data...); return vectorNonce() },
				"code":  func(m *nats.Msg) []byte { m.Header.Set(micro.ErrorCodeHeader, "403"); return vectorNonce() },
				"reason": func(m *nats.Msg) []byte {
					m.Header.Set(micro.ErrorCodeHeader, "401")
					m.Header.Set(subjects.HeaderReason, "stale")
					return vectorNonce()
				},
				"sig": func(m *nats.Msg) []byte {
					m.Header.Set(subjects.HeaderReplySig, flipFirst(v.sig))
					return vectorNonce()
				},
				"unsigned": func(m *nats.Msg) []byte { m.Header.Del(subjects.HeaderReplySig); return vectorNonce() },
			} {
				m := &nats.Msg{Data: append([]byte(nil), body...), Header: nats.Header{}}
				for k, vs := range msg.Header {
					m.Header[k] = append([]string(nil), vs...)
				}
				n := mut(m)
				if err := client.VerifyReply(verifier, n, m); !errors.Is(err, client.ErrReplySignature) {
					t.Fatalf("changed %s still verifies: %v", name, err)
				}
			}
		})
	}
}

func TestVerifyAuditRejectsBadKey(t *testing.T) {
	if err := client.VerifyAudit("UABC", "r1", nil); !errors.Is(err, client.ErrAuditChain) {
		t.Fatalf("user key accepted as service key: %v", err)
	}
	if err := client.VerifyAudit(vectorPub, "r1", nil); err != nil {
		t.Fatalf("empty trail: %v", err)
	}
}

// TestVerifyChainNames: a chain is named api.RoomChain(id) or
// api.IdentitiesChain; any other name is refused before any entry is read.
func TestVerifyChainNames(t *testing.T) {
	for _, chain := range []string{api.RoomChain("r1"), api.IdentitiesChain} {
		if err := client.VerifyChain([]string{vectorPub}, chain, nil); err != nil {
			t.Errorf("VerifyChain(%q, no entries) = %v", chain, err)
		}
	}
	for _, chain := range []string{"", "r1", "room.", "identities.x", "rooms.r1"} {
		if err := client.VerifyChain([]string{vectorPub}, chain, nil); !errors.Is(err, client.ErrAuditChain) {
			t.Errorf("VerifyChain(%q) = %v, want ErrAuditChain", chain, err)
		}
	}
}

// flipFirst changes the first character of a base64 string.
func flipFirst(s string) string {
	if s[0] == 'A' {
		return "B" + s[1:]
	}
	return "A" + s[1:]
}
