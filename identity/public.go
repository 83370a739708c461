package identity

import (
	"errors"
	"fmt"

	"github.com/unibus/membership/api"
)

// PublicHeader starts every public file.
const PublicHeader = "# unibus membership public keys: safe to share; give this file to an admin to register it."

// MarshalPublic renders the public file of p: a header line, then endpoint,
// sign-key and xkey lines.
func MarshalPublic(p api.PublicKeys) []byte {
	return fmt.Appendf(nil, "%s\nendpoint: %s\nsign-key: %s\nxkey: %s\n", PublicHeader, p.Endpoint, p.SignKey, p.XKey)
}

// ParsePublic reads a public file. It refuses a file that holds seeds: an
// identity file handed over by mistake must not travel any further.
func ParsePublic(data []byte) (api.PublicKeys, error) {
	fields, err := scan(data, "endpoint", "sign-key", "xkey", "signing-seed", "xkey-seed")
	if err != nil {
		return api.PublicKeys{}, err
	}
	_, signSeed := fields["signing-seed"]
	_, xSeed := fields["xkey-seed"]
	if signSeed || xSeed {
		return api.PublicKeys{}, errors.New("this file holds seeds (an identity file?); pass the .pub file written by keygen")
	}
	p := api.PublicKeys{Endpoint: fields["endpoint"], SignKey: fields["sign-key"], XKey: fields["xkey"]}
	if err := errors.Join(api.ValidateID("endpoint", p.Endpoint), api.ValidateSigningKey(p.SignKey), api.ValidateXKey("xkey", p.XKey)); err != nil {
		return api.PublicKeys{}, err
	}
	return p, nil
}
