package service

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/unibus/membership/api"
	"github.com/unibus/membership/store"
)

// Bootstrap registers pub as an admin unless its endpoint is already
// registered, writing the identity and its signer index in one batch. It is
// how the first admin comes to exist without a signed request; it reports
// whether it registered anything. An endpoint registered with other keys is
// an error: bootstrapping never replaces keys.
func Bootstrap(ctx context.Context, st *store.Store, pub api.PublicKeys) (bool, error) {
	if err := errors.Join(api.ValidateID("endpoint", pub.Endpoint), api.ValidateSigningKey(pub.SignKey), api.ValidateXKey("xkey", pub.XKey)); err != nil {
		return false, err
	}
	ent, err := st.Get(ctx, keyIdentity(pub.Endpoint))
	if err != nil {
		return false, err
	}
	if ent.Exists() {
		var id api.Identity
		if err := msgpack.Unmarshal(ent.Value, &id); err != nil {
			return false, err
		}
		if id.SignKey != pub.SignKey || id.XKey != pub.XKey || !id.Admin {
			return false, fmt.Errorf("endpoint %s is already registered with other keys or without the admin role", pub.Endpoint)
		}
		return false, nil
	}
	sig, err := st.Get(ctx, keySigner(pub.SignKey))
	if err != nil {
		return false, err
	}
	if sig.Exists() {
		var owner string
		if err := msgpack.Unmarshal(sig.Value, &owner); err == nil && owner == pub.Endpoint {
			// Another replica committed this very bootstrap between our
			// two reads: look again — once its identity record is there,
			// or a dangling index would make us look forever.
			again, err := st.Get(ctx, keyIdentity(pub.Endpoint))
			if err != nil {
				return false, err
			}
			if again.Exists() {
				return Bootstrap(ctx, st, pub)
			}
			return false, fmt.Errorf("signing key of %s is indexed but its identity record is missing", pub.Endpoint)
		}
		return false, fmt.Errorf("signing key of %s is registered to another endpoint", pub.Endpoint)
	}
	now := time.Now().UnixMilli()
	id := &api.Identity{Endpoint: pub.Endpoint, SignKey: pub.SignKey, XKey: pub.XKey, Admin: true, Created: now, Updated: now}
	err = st.Commit(ctx, []store.Write{put(keyIdentity(pub.Endpoint), ent.Rev, id), put(keySigner(pub.SignKey), sig.Rev, pub.Endpoint)})
	if errors.Is(err, store.ErrConflict) {
		return Bootstrap(ctx, st, pub) // another replica bootstrapped at the same time
	}
	return err == nil, err
}
