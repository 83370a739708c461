package client

import (
	"context"
	"crypto/rand"
	"fmt"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/subjects"
)

// RoomKeySize is the size of a room key: 32 random bytes.
const RoomKeySize = 32

// NewRoomKey returns a fresh random room key.
func NewRoomKey() ([]byte, error) {
	k := make([]byte, RoomKeySize)
	_, err := rand.Read(k)
	return k, err
}

// Register registers an identity or replaces its keys and role (admin only).
func (c *Client) Register(ctx context.Context, pub api.PublicKeys, admin bool) (*api.Identity, error) {
	return call[api.Identity](ctx, c, subjects.OpIdentityRegister, &api.RegisterRequest{Endpoint: pub.Endpoint, SignKey: pub.SignKey, XKey: pub.XKey, Admin: admin})
}

// Disable disables an identity (admin only).
func (c *Client) Disable(ctx context.Context, endpoint string) (*api.Identity, error) {
	return call[api.Identity](ctx, c, subjects.OpIdentityDisable, &api.EndpointRequest{Endpoint: endpoint})
}

// Enable enables a disabled identity (admin only).
func (c *Client) Enable(ctx context.Context, endpoint string) (*api.Identity, error) {
	return call[api.Identity](ctx, c, subjects.OpIdentityEnable, &api.EndpointRequest{Endpoint: endpoint})
}

// Lookup returns an endpoint's public keys.
func (c *Client) Lookup(ctx context.Context, endpoint string) (*api.PublicKeys, error) {
	return call[api.PublicKeys](ctx, c, subjects.OpIdentityGet, &api.EndpointRequest{Endpoint: endpoint})
}

// Identities returns one page of identities (admin only).
func (c *Client) Identities(ctx context.Context, after string, limit int) (*api.IdentityPage, error) {
	return call[api.IdentityPage](ctx, c, subjects.OpIdentityList, &api.PageRequest{After: after, Limit: limit})
}

// Whoami returns the caller's identity as the service knows it.
func (c *Client) Whoami(ctx context.Context) (*api.Identity, error) {
	return call[api.Identity](ctx, c, subjects.OpWhoami, &api.Empty{})
}

// CreateRoom creates a room owned by the caller on subject, with members
// (the caller is added if missing). It generates the room key, seals it to
// every member's registered xkey and returns it.
func (c *Client) CreateRoom(ctx context.Context, id, subject string, members []string) (*api.Room, []byte, error) {
	key, err := NewRoomKey()
	if err != nil {
		return nil, nil, err
	}
	all := append([]string{c.id.Endpoint}, members...)
	sealed, err := c.sealTo(ctx, key, dedupe(all))
	if err != nil {
		return nil, nil, err
	}
	sealer, err := c.id.XKey.PublicKey()
	if err != nil {
		return nil, nil, err
	}
	out, err := call[api.Room](ctx, c, subjects.OpRoomCreate, &api.CreateRoomRequest{ID: id, Subject: subject, Sealer: sealer, Members: sealed})
	if err != nil {
		return nil, nil, err
	}
	return out, key, nil
}

// Room returns a room's record (members only).
func (c *Client) Room(ctx context.Context, room string) (*api.Room, error) {
	return call[api.Room](ctx, c, subjects.OpRoomGet, &api.RoomRequest{Room: room})
}

// Members returns one page of a room's members (members only).
func (c *Client) Members(ctx context.Context, room, after string, limit int) (*api.MembersPage, error) {
	return call[api.MembersPage](ctx, c, subjects.OpRoomMembers, &api.MembersRequest{Room: room, After: after, Limit: limit})
}

// AllMembers pages through every member of a room.
func (c *Client) AllMembers(ctx context.Context, room string) ([]api.Member, error) {
	var all []api.Member
	after := ""
	for {
		p, err := c.Members(ctx, room, after, api.MaxPage)
		if err != nil {
			return nil, err
		}
		all = append(all, p.Members...)
		c.report("listing members", len(all), 0)
		if p.Next == "" {
			return all, nil
		}
		after = p.Next
	}
}

// SealedKey fetches the caller's own sealed key for epoch (0: current).
func (c *Client) SealedKey(ctx context.Context, room string, epoch uint64) (*api.KeyReply, error) {
	return call[api.KeyReply](ctx, c, subjects.OpRoomKey, &api.KeyRequest{Room: room, Epoch: epoch})
}

// Key fetches and opens the caller's room key for epoch (0: current). It
// returns the key and its epoch.
func (c *Client) Key(ctx context.Context, room string, epoch uint64) ([]byte, uint64, error) {
	k, err := c.SealedKey(ctx, room, epoch)
	if err != nil {
		return nil, 0, err
	}
	key, err := c.id.XKey.Open(k.Sealed, k.Sealer)
	if err != nil {
		return nil, 0, fmt.Errorf("open sealed key of room %s epoch %d: %w", room, k.Epoch, err)
	}
	return key, k.Epoch, nil
}

// AddMember adds endpoint to a room the caller owns, sealing the current
// room key (fetched and opened from the caller's own copy) to it.
func (c *Client) AddMember(ctx context.Context, room, endpoint string) (*api.Room, error) {
	key, epoch, err := c.Key(ctx, room, 0)
	if err != nil {
		return nil, err
	}
	sealed, err := c.sealTo(ctx, key, []string{endpoint})
	if err != nil {
		return nil, err
	}
	sealer, err := c.id.XKey.PublicKey()
	if err != nil {
		return nil, err
	}
	return call[api.Room](ctx, c, subjects.OpRoomAdd, &api.AddMemberRequest{Room: room, Epoch: epoch, Sealer: sealer, Member: sealed[0]})
}

// RemoveMember removes endpoint from a room the caller owns. The room then
// owes a rekey; see [Client.Rekey].
func (c *Client) RemoveMember(ctx context.Context, room, endpoint string) (*api.Room, error) {
	return call[api.Room](ctx, c, subjects.OpRoomRemove, &api.RemoveMemberRequest{Room: room, Endpoint: endpoint})
}

// Leave ends the caller's own membership.
func (c *Client) Leave(ctx context.Context, room string) (*api.Room, error) {
	return call[api.Room](ctx, c, subjects.OpRoomLeave, &api.RoomRequest{Room: room})
}

// Rekey moves a room the caller owns to the next epoch with a fresh key
// sealed to every current member, and returns the room and the new key.
func (c *Client) Rekey(ctx context.Context, room string) (*api.Room, []byte, error) {
	r, err := c.Room(ctx, room)
	if err != nil {
		return nil, nil, err
	}
	members, err := c.AllMembers(ctx, room)
	if err != nil {
		return nil, nil, err
	}
	key, err := NewRoomKey()
	if err != nil {
		return nil, nil, err
	}
	sealer, err := c.id.XKey.PublicKey()
	if err != nil {
		return nil, nil, err
	}
	sealed := make([]api.SealedKey, 0, len(members))
	for i, m := range members {
		if i%100 == 0 {
			c.report("sealing", i, len(members))
		}
		s, err := c.id.XKey.Seal(key, m.XKey)
		if err != nil {
			return nil, nil, fmt.Errorf("seal to %s: %w", m.Endpoint, err)
		}
		sealed = append(sealed, api.SealedKey{Endpoint: m.Endpoint, Sealed: s})
	}
	c.report("sealing", len(members), len(members))
	out, err := call[api.Room](ctx, c, subjects.OpRoomRekey, &api.RekeyRequest{Room: room, Epoch: r.Epoch + 1, Sealer: sealer, Keys: sealed})
	if err != nil {
		return nil, nil, err
	}
	return out, key, nil
}

// DeleteRoom deletes a room the caller owns.
func (c *Client) DeleteRoom(ctx context.Context, room string) (*api.Room, error) {
	return call[api.Room](ctx, c, subjects.OpRoomDelete, &api.RoomRequest{Room: room})
}

// MyRooms returns one page of the caller's rooms.
func (c *Client) MyRooms(ctx context.Context, after string, limit int) (*api.RoomPage, error) {
	return call[api.RoomPage](ctx, c, subjects.OpRoomMine, &api.PageRequest{After: after, Limit: limit})
}

// sealTo seals key to each endpoint's registered xkey (looked up).
func (c *Client) sealTo(ctx context.Context, key []byte, endpoints []string) ([]api.SealedKey, error) {
	out := make([]api.SealedKey, 0, len(endpoints))
	for _, e := range endpoints {
		pub, err := c.Lookup(ctx, e)
		if err != nil {
			return nil, fmt.Errorf("look up %s: %w", e, err)
		}
		s, err := c.id.XKey.Seal(key, pub.XKey)
		if err != nil {
			return nil, fmt.Errorf("seal to %s: %w", e, err)
		}
		out = append(out, api.SealedKey{Endpoint: e, Sealed: s})
	}
	return out, nil
}

func dedupe(xs []string) []string {
	seen := map[string]bool{}
	out := xs[:0:0]
	for _, x := range xs {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}
