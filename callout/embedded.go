package callout

import (
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// EmbeddedAccount is the account of an embedded server without accounts:
// the global account, where the service and the endpoints live.
const EmbeddedAccount = "$G"

// AuthTimeout is how long an embedded server waits for the callout's answer
// before it refuses the connection: also how long a connection waits when
// no replica is up. nats-server's default, 2 s, admitted 708 of 1,000
// endpoints connecting at once on a loaded 2-core machine
// (performance.md).
const AuthTimeout = 5 * time.Second

// EmbeddedKeys are the keys an embedded server's callout runs with, made
// fresh at every start: the server and the callout start together, so
// nothing needs to outlive the process.
type EmbeddedKeys struct {
	Issuer  nkeys.KeyPair // signs the callout's answers (A…)
	Service nkeys.KeyPair // the service's own user, exempt from the callout
	System  nkeys.KeyPair // the revoker's system-account user
}

// RevokerPermissions is all the system account grants the revoker: ask each
// server for connections and kick one, and read the answers. It cannot read
// system events, change accounts or reload servers
// (docs/security.md).
func RevokerPermissions() *server.Permissions {
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{connzPing, "$SYS.REQ.SERVER.*.KICK"}},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
	}
}

// ConfigureEmbedded turns on the auth callout of an embedded server's
// options: every connection but the service's and the revoker's is
// authorized by the callout.
func ConfigureEmbedded(opts *server.Options) (*EmbeddedKeys, error) {
	var k EmbeddedKeys
	var err error
	if k.Issuer, err = nkeys.CreateAccount(); err != nil {
		return nil, err
	}
	if k.Service, err = nkeys.CreateUser(); err != nil {
		return nil, err
	}
	if k.System, err = nkeys.CreateUser(); err != nil {
		return nil, err
	}
	issuer, _ := k.Issuer.PublicKey()
	svc, _ := k.Service.PublicKey()
	sys, _ := k.System.PublicKey()
	sysAcc := server.NewAccount(server.DEFAULT_SYSTEM_ACCOUNT)
	opts.Accounts = append(opts.Accounts, sysAcc)
	opts.SystemAccount = server.DEFAULT_SYSTEM_ACCOUNT
	opts.Nkeys = append(opts.Nkeys,
		&server.NkeyUser{Nkey: svc},
		&server.NkeyUser{Nkey: sys, Account: sysAcc, Permissions: RevokerPermissions()})
	opts.AuthCallout = &server.AuthCallout{Issuer: issuer, Account: EmbeddedAccount, AuthUsers: []string{svc, sys}}
	opts.AuthTimeout = AuthTimeout.Seconds()
	// nats-server PINGs a new client 2 s after it connected, even while
	// the callout is still deciding, and nats.go fails a connect that gets
	// a PING before its PONG: without this, 2 s is the real limit whatever
	// AuthTimeout says. Not settable in a config file (deploy.md).
	opts.DisableShortFirstPing = true
	return &k, nil
}
