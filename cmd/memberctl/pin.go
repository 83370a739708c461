package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/unibus/membership/client"
	"github.com/unibus/membership/envelope"
)

// Reply verification is on by default (docs/security.md, "Pinning the
// service key"). memberctl keeps what it learnt beside the identity file,
// in known_services.json, like ssh's known_hosts: per NATS server set and
// subject prefix, the pinned service key, the keys it rotated away from
// (still good for audit entries signed before), and per audit chain the
// last head it verified (rollback detection, audit.go).

// Environment variables of the pinning flags.
const (
	envServiceKey = "MEMBERCTL_SERVICE_KEY"
	envNoVerify   = "MEMBERCTL_INSECURE_NO_VERIFY"
)

// knownFile is the name of the pin store beside the identity file.
const knownFile = "known_services.json"

// knownServices is the pin store's layout.
type knownServices struct {
	Services map[string]*knownService `json:"services"`
}

// knownService is what memberctl knows of one deployment.
type knownService struct {
	Key      string               `json:"key"`                // pinned service key, N…
	Previous []string             `json:"previous,omitempty"` // keys rotated away from, oldest first
	Since    string               `json:"since"`              // when Key was pinned (RFC 3339)
	Audit    map[string]auditHead `json:"audit,omitempty"`    // chain → last verified head
}

// auditHead is the last entry of a chain that memberctl verified.
type auditHead struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"` // hex
}

// pinStore is the pin store of this invocation's identity and deployment.
type pinStore struct {
	path string
	id   string // servers and prefix
	all  knownServices
}

// deployment names the NATS server set and prefix a pin belongs to. The
// server list is sorted so that the order given does not matter; with a
// NATS context (named or selected) its name stands for the servers it
// holds.
func (g *globals) deployment() string {
	return g.conn.Target() + " " + g.prefix
}

// openPins reads the pin store beside the identity file; a missing file is
// an empty store.
func (a *app) openPins() (*pinStore, error) {
	p := &pinStore{path: filepath.Join(filepath.Dir(a.g.identity), knownFile), id: a.g.deployment()}
	b, err := os.ReadFile(p.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, localErr("read "+p.path, err)
	default:
		if err := json.Unmarshal(b, &p.all); err != nil {
			return nil, localErr("read "+p.path, err)
		}
	}
	if p.all.Services == nil {
		p.all.Services = map[string]*knownService{}
	}
	return p, nil
}

// entry is this deployment's record, nil if none.
func (p *pinStore) entry() *knownService { return p.all.Services[p.id] }

// pin records key as this deployment's service key; a different key
// pinned before is kept as a previous key.
func (p *pinStore) pin(key string) {
	e := p.entry()
	if e == nil {
		e = &knownService{}
		p.all.Services[p.id] = e
	}
	if e.Key == key {
		return
	}
	if e.Key != "" {
		e.Previous = append(e.Previous, e.Key)
	}
	e.Key, e.Since = key, time.Now().UTC().Format(time.RFC3339)
}

// save writes the store (mode 0600, through a temporary file).
func (p *pinStore) save() error {
	b, err := json.MarshalIndent(&p.all, "", "  ")
	if err != nil {
		return err
	}
	tmp := p.path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, p.path)
}

// pinOptions returns the client options that verify replies: against
// --service-key (which also accepts a rotation by hand), else the pinned
// key, else the key of the first verified reply, stored then (trust on
// first use). --insecure-no-verify turns verification off, said on stderr.
func (a *app) pinOptions() ([]client.Option, error) {
	if a.g.noVerify {
		a.note("replies are NOT verified (--insecure-no-verify): whoever answers on %s can answer in the service's name", a.g.prefix)
		return []client.Option{client.WithUnverifiedReplies()}, nil
	}
	pins, err := a.openPins()
	if err != nil {
		return nil, err
	}
	a.pins = pins
	onPin := client.WithPinned(func(old, new string) {
		pins.pin(new)
		if err := pins.save(); err != nil {
			a.note("could not store service key %s in %s: %v", new, pins.path, err)
			return
		}
		if old == "" {
			a.note("trusting service key %s for %s on first use (stored in %s)", new, pins.id, pins.path)
		} else {
			a.note("service key rotated from %s to %s through a statement signed by %s (stored in %s)", old, new, old, pins.path)
		}
	})
	key := a.g.serviceKey
	if key != "" {
		if !envelope.IsServerKey(key) {
			return nil, usagef("--service-key %q is not an nkeys server public key (N…)", key)
		}
	} else if e := pins.entry(); e != nil {
		key = e.Key
	}
	if key == "" {
		return []client.Option{onPin}, nil
	}
	return []client.Option{client.WithServiceKey(key), onPin}, nil
}

// keepPin stores a key given with --service-key once a command succeeded
// with it, i.e. replies verified under it: that is how a rotation is
// accepted by hand. A key that verified nothing is never stored.
func (a *app) keepPin(err error) {
	if err != nil || a.pins == nil || a.cl == nil || a.g.serviceKey == "" || a.cl.ServiceKey() != a.g.serviceKey {
		return
	}
	if e := a.pins.entry(); e != nil && e.Key == a.g.serviceKey {
		return
	}
	a.pins.pin(a.g.serviceKey)
	if serr := a.pins.save(); serr != nil {
		a.note("could not store service key %s in %s: %v", a.g.serviceKey, a.pins.path, serr)
		return
	}
	a.note("service key %s pinned for %s (stored in %s)", a.g.serviceKey, a.pins.id, a.pins.path)
}

// trustedKeys are the keys audit entries may be signed by: the pinned key
// and the keys it rotated away from.
func (a *app) trustedKeys(cl *client.Client) []string {
	keys := []string{cl.ServiceKey()}
	if a.pins != nil {
		if e := a.pins.entry(); e != nil {
			keys = append(append(keys, e.Key), e.Previous...)
		}
	}
	return keys
}

// pinHint explains a reply signed by another key than the pinned one.
func (a *app) pinHint(err error) string {
	var m *client.KeyMismatchError
	if !errors.As(err, &m) {
		return ""
	}
	where := knownFile + " beside the identity file"
	if a.pins != nil {
		where = a.pins.path
	}
	return fmt.Sprintf("the service answered with key %s, but %s is pinned for %s (%s) and no rotation statement signed by it names the new key. "+
		"Someone may be answering in the service's name. If the operator confirms the service key was rotated to %s, accept it with --service-key %s",
		m.Offered, m.Pinned, a.g.deployment(), where, m.Offered, m.Offered)
}
