package main

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"strconv"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/client"
	"github.com/unibus/membership/subjects"
)

func roomCreate(ctx context.Context, a *app, c *command, args []string) error {
	fset := newFlagSet(c.name)
	subject := fset.String("subject", "", "NATS subject of the room (required)")
	var members listFlag
	fset.Var(&members, "member", "member to add with the room (repeatable, or comma separated)")
	pos, err := a.parseArgs(fset, c, args, 1, 1)
	if err != nil {
		return err
	}
	if *subject == "" {
		return usagef("room create: --subject is required\nusage: memberctl %s %s", c.name, c.args)
	}
	cl, err := a.client()
	if err != nil {
		return err
	}
	r, _, err := cl.CreateRoom(ctx, pos[0], *subject, members)
	if err != nil {
		return opErr(subjects.OpRoomCreate, err)
	}
	return a.roomOutput(r)
}

// roomCommand runs a command that takes one room and answers a room.
func roomCommand(ctx context.Context, a *app, c *command, args []string, op subjects.Op,
	call func(*client.Client, context.Context, string) (*api.Room, error)) error {
	return oneArgCommand(ctx, a, c, args, op, call, a.roomOutput)
}

func (a *app) roomOutput(r *api.Room) error {
	v := toRoom(r)
	return a.output(v, func(w io.Writer) { roomText(w, v) })
}

func roomGet(ctx context.Context, a *app, c *command, args []string) error {
	return roomCommand(ctx, a, c, args, subjects.OpRoomGet, (*client.Client).Room)
}

func roomLeave(ctx context.Context, a *app, c *command, args []string) error {
	return roomCommand(ctx, a, c, args, subjects.OpRoomLeave, (*client.Client).Leave)
}

func roomDelete(ctx context.Context, a *app, c *command, args []string) error {
	return roomCommand(ctx, a, c, args, subjects.OpRoomDelete, (*client.Client).DeleteRoom)
}

func roomRekey(ctx context.Context, a *app, c *command, args []string) error {
	return roomCommand(ctx, a, c, args, subjects.OpRoomRekey, func(cl *client.Client, ctx context.Context, room string) (*api.Room, error) {
		r, _, err := cl.Rekey(ctx, room)
		return r, err
	})
}

func roomMembers(ctx context.Context, a *app, c *command, args []string) error {
	fset := newFlagSet(c.name)
	var after string
	var limit int
	pageFlags(fset, &after, &limit)
	all := fset.Bool("all", false, "every member, all pages (not with --after or --limit)")
	pos, err := a.parseArgs(fset, c, args, 1, 1)
	if err != nil {
		return err
	}
	if *all && (isSet(fset, "after") || isSet(fset, "limit")) {
		return usagef("room members: --all pages through every member; it excludes --after and --limit")
	}
	if err := checkLimit(c, limit); err != nil {
		return err
	}
	cl, err := a.client()
	if err != nil {
		return err
	}
	var v membersJSON
	if *all {
		ms, err := cl.AllMembers(ctx, pos[0])
		if err != nil {
			return opErr(subjects.OpRoomMembers, err)
		}
		v = toMembers(pos[0], ms, "")
	} else {
		p, err := cl.Members(ctx, pos[0], after, limit)
		if err != nil {
			return opErr(subjects.OpRoomMembers, err)
		}
		v = toMembers(pos[0], p.Members, p.Next)
	}
	return a.output(v, func(w io.Writer) {
		rows := [][]string{{"ENDPOINT", "SINCE", "SIGN-KEY", "XKEY"}}
		for _, m := range v.Members {
			rows = append(rows, []string{m.Endpoint, strconv.FormatUint(m.Since, 10), m.SignKey, m.XKey})
		}
		table(w, rows)
		nextText(w, v.Next)
	})
}

func isSet(fset *flag.FlagSet, name string) bool {
	set := false
	fset.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

func roomKey(ctx context.Context, a *app, c *command, args []string) error {
	fset := newFlagSet(c.name)
	var epoch epochFlag
	fset.Var(&epoch, "epoch", "the key of this epoch (default the current one)")
	pos, err := a.parseArgs(fset, c, args, 1, 1)
	if err != nil {
		return err
	}
	cl, err := a.client()
	if err != nil {
		return err
	}
	key, got, err := cl.Key(ctx, pos[0], uint64(epoch))
	if err != nil {
		return opErr(subjects.OpRoomKey, err)
	}
	v := keyJSON{Room: pos[0], Epoch: got, Key: hex.EncodeToString(key)}
	return a.output(v, func(w io.Writer) {
		fields(w, "room", v.Room, "epoch", strconv.FormatUint(v.Epoch, 10), "key", v.Key)
	})
}

func roomAdd(ctx context.Context, a *app, c *command, args []string) error {
	fset := newFlagSet(c.name)
	pos, err := a.parseArgs(fset, c, args, 2, 2)
	if err != nil {
		return err
	}
	cl, err := a.client()
	if err != nil {
		return err
	}
	r, err := cl.AddMember(ctx, pos[0], pos[1])
	if err != nil {
		return opErr(subjects.OpRoomAdd, err)
	}
	return a.roomOutput(r)
}

func roomRemove(ctx context.Context, a *app, c *command, args []string) error {
	fset := newFlagSet(c.name)
	noRekey := fset.Bool("no-rekey", false, "do not rekey after the removal: the room then owes a rekey")
	pos, err := a.parseArgs(fset, c, args, 2, 2)
	if err != nil {
		return err
	}
	room, endpoint := pos[0], pos[1]
	cl, err := a.client()
	if err != nil {
		return err
	}
	r, err := cl.RemoveMember(ctx, room, endpoint)
	if err != nil {
		return opErr(subjects.OpRoomRemove, err)
	}
	if *noRekey {
		a.note("room %s owes a rekey: %s still holds the key of epoch %d; run `memberctl room rekey %s`", room, endpoint, r.Epoch, room)
	} else {
		rr, _, err := cl.Rekey(ctx, room)
		if err != nil {
			return &cmdError{op: string(subjects.OpRoomRekey), err: err,
				hint: fmt.Sprintf("%s was removed, but room %s still owes a rekey: run `memberctl room rekey %s`", endpoint, room, room)}
		}
		r = rr
	}
	v := removeJSON{Removed: endpoint, Rekeyed: !*noRekey, Room: toRoom(r)}
	return a.output(v, func(w io.Writer) {
		if v.Rekeyed {
			fmt.Fprintf(w, "removed %s from %s; rekeyed to epoch %d (%d members left)\n\n", endpoint, room, r.Epoch, r.Members)
		} else {
			fmt.Fprintf(w, "removed %s from %s; not rekeyed\n\n", endpoint, room)
		}
		roomText(w, v.Room)
	})
}

func roomMine(ctx context.Context, a *app, c *command, args []string) error {
	return pageCommand(ctx, a, c, args, subjects.OpRoomMine, func(cl *client.Client, after string, limit int) (any, func(io.Writer), error) {
		p, err := cl.MyRooms(ctx, after, limit)
		if err != nil {
			return nil, nil, err
		}
		v := roomPageJSON{Rooms: make([]roomJSON, 0, len(p.Rooms)), Next: p.Next}
		for i := range p.Rooms {
			v.Rooms = append(v.Rooms, toRoom(&p.Rooms[i]))
		}
		return v, func(w io.Writer) {
			rows := [][]string{{"ROOM", "SUBJECT", "OWNER", "EPOCH", "MEMBERS", "REKEY-OWED"}}
			for _, r := range v.Rooms {
				rows = append(rows, []string{r.ID, r.Subject, r.Owner, strconv.FormatUint(r.Epoch, 10), strconv.Itoa(r.Members), yesNo(r.RekeyOwed)})
			}
			table(w, rows)
			nextText(w, v.Next)
		}, nil
	})
}
