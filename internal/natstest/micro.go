package natstest

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// Gather sends an empty request to subject (a $SRV.… discovery subject
// that every micro instance answers) and returns the answers, collected
// until none has come for quiet.
func Gather(t testing.TB, nc *nats.Conn, subject string, quiet time.Duration) [][]byte {
	t.Helper()
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		t.Fatal(err)
	}
	var answers [][]byte
	for {
		msg, err := sub.NextMsg(quiet)
		if err != nil {
			return answers
		}
		answers = append(answers, msg.Data)
	}
}

// StatInt reads one integer field of an endpoint's custom stats data.
func StatInt(t testing.TB, data json.RawMessage, field string) int {
	t.Helper()
	var d map[string]any
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("stats data: %v", err)
	}
	n, _ := d[field].(float64)
	return int(n)
}
