package identity

import (
	"errors"
	"fmt"
	"os"

	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/api"
)

// Header starts every identity file.
const Header = "# unibus membership identity: endpoint id and both seeds. Keep it secret (mode 0600)."

// Identity is an endpoint id with its signing (nkeys user) and key-exchange
// (nkeys curve) key pairs.
type Identity struct {
	Endpoint string
	Sign     nkeys.KeyPair // user key, "U…"
	XKey     nkeys.KeyPair // curve key, "X…"
}

// New generates fresh keys for endpoint.
func New(endpoint string) (*Identity, error) {
	if err := api.ValidateID("endpoint", endpoint); err != nil {
		return nil, err
	}
	sign, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	xkey, err := nkeys.CreateCurveKeys()
	if err != nil {
		return nil, err
	}
	return &Identity{Endpoint: endpoint, Sign: sign, XKey: xkey}, nil
}

// Public returns the identity's public keys.
func (id *Identity) Public() (api.PublicKeys, error) {
	sign, err := id.Sign.PublicKey()
	if err != nil {
		return api.PublicKeys{}, err
	}
	x, err := id.XKey.PublicKey()
	if err != nil {
		return api.PublicKeys{}, err
	}
	return api.PublicKeys{Endpoint: id.Endpoint, SignKey: sign, XKey: x}, nil
}

// Marshal renders the identity file: a header line, then endpoint,
// signing-seed and xkey-seed lines.
func (id *Identity) Marshal() ([]byte, error) {
	ss, err := id.Sign.Seed()
	if err != nil {
		return nil, err
	}
	xs, err := id.XKey.Seed()
	if err != nil {
		return nil, err
	}
	return fmt.Appendf(nil, "%s\nendpoint: %s\nsigning-seed: %s\nxkey-seed: %s\n", Header, id.Endpoint, ss, xs), nil
}

// Write writes id to path with mode 0600, refusing to overwrite.
func Write(path string, id *Identity) error {
	data, err := id.Marshal()
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ErrKeyFileMode reports an identity file readable by group or others.
var ErrKeyFileMode = errors.New("identity file is readable by group or others; chmod 600 it")

// Load reads an identity file, refusing one that group or others can read:
// it holds seeds.
func Load(path string) (*Identity, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s: %w", path, ErrKeyFileMode)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	id, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return id, nil
}

// Parse parses the identity file format written by [Identity.Marshal].
func Parse(data []byte) (*Identity, error) {
	fields, err := scan(data, "endpoint", "signing-seed", "xkey-seed")
	if err != nil {
		return nil, fmt.Errorf("identity file: %w", err)
	}
	id := &Identity{Endpoint: fields["endpoint"]}
	if err := api.ValidateID("endpoint", id.Endpoint); err != nil {
		return nil, fmt.Errorf("identity file: %w", err)
	}
	if id.Sign, err = nkeys.FromSeed([]byte(fields["signing-seed"])); err != nil {
		return nil, errors.New("identity file: signing-seed is not an nkeys seed")
	}
	if pub, _ := id.Sign.PublicKey(); !nkeys.IsValidPublicUserKey(pub) {
		return nil, errors.New("identity file: signing-seed must be a user seed (SU…)")
	}
	if id.XKey, err = nkeys.FromCurveSeed([]byte(fields["xkey-seed"])); err != nil {
		return nil, errors.New("identity file: xkey-seed must be a curve seed (SX…)")
	}
	return id, nil
}
