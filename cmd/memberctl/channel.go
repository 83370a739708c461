package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/unibus/membership/client"
)

// The channel commands, listed after "room mine" in help.
func init() {
	groups["room"] += ", pub, sub"
	at := slices.IndexFunc(commands, func(c command) bool { return c.name == "room mine" }) + 1
	commands = slices.Insert(commands, at,
		command{name: "room pub", args: "ROOM MESSAGE", run: roomPub,
			summary: "publish an encrypted, signed message on a room's subject (members)",
			help: "Seals MESSAGE under the room's current epoch key and signs it with your identity\n" +
				"(docs/protocol.md §19). The member list that decides who may send is read from replies\n" +
				"signed by the pinned service key (see --service-key); not with --insecure-no-verify.\n" +
				"JSON: {\"room\", \"epoch\", \"id\"}."},
		command{name: "room sub", args: "ROOM [--count N]", run: roomSub,
			summary: "print the room's messages as they arrive, verified and decrypted (members); Ctrl-C stops",
			help: "Prints one line per message that verifies and opens: time, sender, epoch and the text.\n" +
				"With --json, one JSON object per line: {\"room\", \"epoch\", \"sender\", \"id\", \"time\",\n" +
				"\"data\"} (\"data_base64\" instead of \"data\" when the message is not UTF-8 text). Refused\n" +
				"messages are noted on stderr with the reason. --count N exits after N messages; Ctrl-C\n" +
				"(or SIGTERM) stops with exit 0. A rekey is picked up without a restart."},
	)
}

// channelJSON is one message of `room sub --json`, or the result of `room pub`.
type channelJSON struct {
	Room       string `json:"room"`
	Epoch      uint64 `json:"epoch"`
	Sender     string `json:"sender,omitempty"`
	ID         string `json:"id"`
	Time       string `json:"time,omitempty"`
	Data       string `json:"data,omitempty"`
	DataBase64 []byte `json:"data_base64,omitempty"`
}

// openChannel opens ROOM's channel. Who may send is checked against
// member lists in replies the service signed, so replies must be verified:
// under the pinned key (pin.go), never with --insecure-no-verify.
func (a *app) openChannel(ctx context.Context, c *command, room string, opts ...client.ChannelOption) (*client.Channel, error) {
	if a.g.noVerify {
		return nil, usagef("%s: cannot run with --insecure-no-verify: who may send is checked against replies the service signed", c.name)
	}
	cl, err := a.client()
	if err != nil {
		return nil, err
	}
	ch, err := cl.Channel(ctx, room, opts...)
	if err != nil {
		return nil, &cmdError{op: "open channel of " + room, err: err}
	}
	return ch, nil
}

func roomPub(ctx context.Context, a *app, c *command, args []string) error {
	fset := newFlagSet(c.name)
	a.g.register(fset)
	pos, err := a.parseArgs(fset, c, args, 2, 2)
	if err != nil {
		return err
	}
	ch, err := a.openChannel(ctx, c, pos[0])
	if err != nil {
		return err
	}
	id, err := ch.Publish(ctx, []byte(pos[1]))
	if err == nil {
		err = a.nc.FlushTimeout(a.g.timeout) // delivered to the server before exiting
	}
	if err != nil {
		return &cmdError{op: "publish on " + pos[0], err: err}
	}
	v := channelJSON{Room: pos[0], Epoch: ch.Epoch(), ID: id.String()}
	return a.output(v, func(w io.Writer) {
		fields(w, "room", v.Room, "subject", ch.Subject(), "epoch", strconv.FormatUint(v.Epoch, 10), "id", v.ID)
	})
}

func roomSub(ctx context.Context, a *app, c *command, args []string) error {
	fset := newFlagSet(c.name)
	a.g.register(fset)
	count := fset.Int("count", 0, "")
	pos, err := a.parseArgs(fset, c, args, 1, 1)
	if err != nil {
		return err
	}
	if *count < 0 {
		return usagef("room sub: --count must not be negative")
	}
	ch, err := a.openChannel(ctx, c, pos[0], client.WithRefusals(func(_ *nats.Msg, err error) {
		a.note("refused a message: %v", err)
	}))
	if err != nil {
		return err
	}
	sub, err := ch.SubscribeSync(ctx)
	if err != nil {
		return &cmdError{op: "subscribe to " + ch.Subject(), err: err}
	}
	defer func() { _ = sub.Unsubscribe() }()
	a.note("listening on %s (room %s, epoch %d); Ctrl-C stops", ch.Subject(), pos[0], ch.Epoch())
	enc := json.NewEncoder(a.stdout)
	enc.SetEscapeHTML(false)
	for n := 0; *count == 0 || n < *count; n++ {
		m, err := sub.Next(ctx)
		if errors.Is(err, context.Canceled) || (err != nil && ctx.Err() != nil) {
			return nil // Ctrl-C or SIGTERM
		}
		if err != nil {
			return &cmdError{op: "receive on " + ch.Subject(), err: err}
		}
		if err := a.printMessage(enc, m); err != nil {
			return err
		}
	}
	return nil
}

// printMessage writes one received message: a JSON line with --json, else
// a text line.
func (a *app) printMessage(enc *json.Encoder, m *client.Message) error {
	v := channelJSON{Room: m.Room, Epoch: m.Epoch, Sender: m.Sender, ID: m.ID.String(), Time: m.Time.UTC().Format(time.RFC3339Nano)}
	if utf8.Valid(m.Data) {
		v.Data = string(m.Data)
	} else {
		v.DataBase64 = m.Data
	}
	if a.g.json {
		return enc.Encode(v)
	}
	text := v.Data
	if v.DataBase64 != nil {
		text = fmt.Sprintf("(%d bytes, not text; --json shows them in base64)", len(m.Data))
	}
	_, err := fmt.Fprintf(a.stdout, "%s %s (epoch %d): %s\n", timeText(m.Time), m.Sender, m.Epoch, text)
	return err
}
