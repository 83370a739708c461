package service

import (
	"context"
	"sort"
	"strings"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/store"
)

// register creates an identity or replaces its keys and role (admin only).
// The signer index moves with the signing key, and a key already bound to
// another endpoint is refused.
func (s *Service) register(ctx context.Context, c *call) (*mutation, error) {
	var req api.RegisterRequest
	if err := c.body(&req); err != nil {
		return nil, err
	}
	if err := api.ValidateID("endpoint", req.Endpoint); err != nil {
		return nil, err
	}
	if err := api.ValidateSigningKey(req.SignKey); err != nil {
		return nil, err
	}
	if err := api.ValidateXKey("xkey", req.XKey); err != nil {
		return nil, err
	}
	old, idRev, err := s.identity(ctx, c, req.Endpoint)
	if err != nil {
		return nil, err
	}
	var owner string
	sigRev, taken, err := s.get(ctx, c, keySigner(req.SignKey), &owner)
	if err != nil {
		return nil, err
	}
	if taken && owner != req.Endpoint {
		return nil, api.E(api.KindExists, "sign_key is registered to another endpoint")
	}
	now := c.now.UnixMilli()
	id := api.Identity{Endpoint: req.Endpoint, SignKey: req.SignKey, XKey: req.XKey, Admin: req.Admin, Created: now, Updated: now}
	m := &mutation{reply: &id, audit: identityTarget(id.Endpoint)}
	if old != nil {
		if old.Endpoint == c.signer.Endpoint && !req.Admin {
			return nil, api.E(api.KindInvalid, "an admin cannot remove its own admin role")
		}
		id.Created, id.Disabled = old.Created, old.Disabled
		if old.SignKey != req.SignKey {
			oldRev, _, err := s.get(ctx, c, keySigner(old.SignKey), new(string))
			if err != nil {
				return nil, err
			}
			m.writes = append(m.writes, del(keySigner(old.SignKey), oldRev))
		}
	}
	m.writes = append(m.writes, put(keyIdentity(req.Endpoint), idRev, &id), put(keySigner(req.SignKey), sigRev, req.Endpoint))
	return m, nil
}

func (s *Service) disable(ctx context.Context, c *call) (*mutation, error) {
	return s.setDisabled(ctx, c, true)
}

func (s *Service) enable(ctx context.Context, c *call) (*mutation, error) {
	return s.setDisabled(ctx, c, false)
}

func (s *Service) setDisabled(ctx context.Context, c *call, disabled bool) (*mutation, error) {
	var req api.EndpointRequest
	if err := c.body(&req); err != nil {
		return nil, err
	}
	if err := api.ValidateID("endpoint", req.Endpoint); err != nil {
		return nil, err
	}
	if disabled && req.Endpoint == c.signer.Endpoint {
		return nil, api.E(api.KindInvalid, "an admin cannot disable itself")
	}
	id, rev, err := s.identity(ctx, c, req.Endpoint)
	if err != nil {
		return nil, err
	}
	if id == nil {
		return nil, api.E(api.KindNotFound, "endpoint %s is not registered", req.Endpoint)
	}
	id.Disabled, id.Updated = disabled, c.now.UnixMilli()
	return &mutation{reply: id, audit: identityTarget(id.Endpoint), writes: []store.Write{put(keyIdentity(id.Endpoint), rev, id)}}, nil
}

// getIdentity is the directory lookup by exact id, for any active identity.
func (s *Service) getIdentity(ctx context.Context, c *call) (any, error) {
	var req api.EndpointRequest
	if err := c.body(&req); err != nil {
		return nil, err
	}
	if err := api.ValidateID("endpoint", req.Endpoint); err != nil {
		return nil, err
	}
	id, _, err := s.identity(ctx, c, req.Endpoint)
	if err != nil {
		return nil, err
	}
	if id == nil {
		return nil, api.E(api.KindNotFound, "endpoint %s is not registered", req.Endpoint)
	}
	return &api.PublicKeys{Endpoint: id.Endpoint, SignKey: id.SignKey, XKey: id.XKey, Disabled: id.Disabled}, nil
}

func (s *Service) listIdentities(ctx context.Context, c *call) (any, error) {
	var req api.PageRequest
	if err := c.body(&req); err != nil {
		return nil, err
	}
	ids, next, err := s.page(ctx, c, famIdentity, req.After, req.Limit)
	if err != nil {
		return nil, err
	}
	out := &api.IdentityPage{Identities: []api.Identity{}, Next: next}
	for _, e := range ids {
		id, _, err := s.identity(ctx, c, e)
		if err != nil {
			return nil, err
		}
		if id != nil {
			out.Identities = append(out.Identities, *id)
		}
	}
	return out, nil
}

func (s *Service) whoami(ctx context.Context, c *call) (any, error) {
	// The body is Empty: anything else is as malformed here as elsewhere.
	if err := c.body(&api.Empty{}); err != nil {
		return nil, err
	}
	return c.signer, nil
}

// pageArgs checks a page request's cursor and returns its limit.
func pageArgs(after string, limit int) (int, error) {
	limit, err := api.PageLimit(limit)
	if err == nil && after != "" {
		err = api.ValidateID("after", after)
	}
	return limit, err
}

// page lists the last key tokens under prefix, sorted, after `after`, at
// most limit of them; next is the cursor for the following page.
func (s *Service) page(ctx context.Context, c *call, prefix, after string, limit int) (ids []string, next string, err error) {
	if limit, err = pageArgs(after, limit); err != nil {
		return nil, "", err
	}
	keys, err := s.listKeys(ctx, prefix)
	if err != nil {
		return nil, "", s.storeErr(c, "list "+keyFamily(prefix), err)
	}
	for _, k := range keys {
		if id := strings.TrimPrefix(k, prefix); id > after {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	if len(ids) > limit {
		ids, next = ids[:limit], ids[limit-1]
	}
	return ids, next, nil
}
