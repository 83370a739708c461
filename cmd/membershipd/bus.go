package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/callout"
	"github.com/unibus/membership/service"
)

// busConfig is bus enforcement: the NATS auth callout (package callout).
type busConfig struct {
	Mode       string
	Issuer     string // account seed file (SA…)
	XKey       string // curve seed file (SX…)
	Account    string
	SystemNKey string // seed file of the system-account user that kicks

	embedded *callout.EmbeddedKeys // set when the embedded server was configured
}

// flags registers the --bus flags.
func (b *busConfig) flags(str func(p *string, name, env, def, usage string)) {
	str(&b.Mode, "bus", "MEMBERSHIPD_BUS", string(callout.Off), "bus enforcement through the NATS auth callout: off, observe (admit all as an open bus would, log and count in 'nats micro stats' what enforce would deny) or enforce (an endpoint connects with its identity's key and may use only its rooms' subjects). Off by default: the embedded server then also accepts clients without credentials, which every existing memberctl and client setup relies on; see docs/deploy.md")
	str(&b.Issuer, "bus-issuer", "MEMBERSHIPD_BUS_ISSUER", "", "bus: account nkey seed file (SA…) signing the callout's answers; its public key is auth_callout.issuer in the server config (embedded: generated)")
	str(&b.XKey, "bus-xkey", "MEMBERSHIPD_BUS_XKEY", "", "bus: curve nkey seed file (SX…) when auth_callout.xkey is set: requests and answers are encrypted")
	str(&b.Account, "bus-account", "MEMBERSHIPD_BUS_ACCOUNT", "MEMBERSHIP", "bus: the account admitted endpoints are placed in (embedded: the global account)")
	str(&b.SystemNKey, "bus-system-nkey", "MEMBERSHIPD_BUS_SYSTEM_NKEY", "", "bus: nkey seed file of a system-account user allowed $SYS.REQ.SERVER.PING.CONNZ and $SYS.REQ.SERVER.*.KICK only: it disconnects endpoints that lose access (embedded: generated)")
}

func (b *busConfig) mode() callout.Mode { m, _ := callout.ParseMode(b.Mode); return m }

// validate checks the bus flags; an embedded server makes its own keys.
func (b *busConfig) validate(embedded bool, natsURL, routes string) error {
	m, err := callout.ParseMode(b.Mode)
	if err != nil || m == callout.Off {
		return err
	}
	if embedded && routes != "" {
		// Each embedded node would make its own issuer key, and a node's
		// request answered by another node's replica would be refused.
		return errors.New("--bus " + b.Mode + " with --routes: embedded cluster nodes cannot share a callout; run nats-server with docs/deploy/callout")
	}
	if embedded {
		return nil
	}
	var errs []error
	if natsURL == "" {
		errs = append(errs, errors.New("--bus "+b.Mode+" needs --nats-url: the revoker's system-account connection does not use --context"))
	}
	if b.Issuer == "" {
		errs = append(errs, errors.New("--bus "+b.Mode+" on an existing deployment needs --bus-issuer"))
	}
	if b.SystemNKey == "" {
		errs = append(errs, errors.New("--bus "+b.Mode+" on an existing deployment needs --bus-system-nkey"))
	}
	return errors.Join(errs...)
}

// configureEmbedded turns the callout on in the embedded server's options.
func (b *busConfig) configureEmbedded(opts *server.Options) error {
	if b.mode() == callout.Off {
		return nil
	}
	k, err := callout.ConfigureEmbedded(opts)
	b.embedded = k
	return err
}

// connOptions are the service connection's credential on the embedded
// server with the callout on (exempt from it); none otherwise.
func (b *busConfig) connOptions() []nats.Option {
	if b.embedded == nil {
		return nil
	}
	pub, _ := b.embedded.Service.PublicKey()
	return []nats.Option{nats.Nkey(pub, b.embedded.Service.Sign)}
}

// busRunner is the running callout of this replica.
type busRunner struct {
	co  *callout.Callout
	rev *callout.Revoker
	sys *nats.Conn
	ctx context.Context
}

// startBus prepares the callout and its revoker, and sets the service's
// revocation hook; serve starts answering once the service runs. Nil when
// the bus is off.
func startBus(ctx context.Context, cfg *Config, log *slog.Logger) (*busRunner, error) {
	b := &cfg.Bus
	if b.mode() == callout.Off {
		return nil, nil
	}
	ccfg := callout.Config{Mode: b.mode(), Account: b.Account, Prefix: cfg.Service.Prefix,
		Logger: log.With("component", "bus")}
	sysOpts := []nats.Option{nats.Name("membershipd-bus-revoker"), nats.MaxReconnects(-1)}
	if b.embedded != nil {
		ccfg.Issuer, ccfg.Account = b.embedded.Issuer, callout.EmbeddedAccount
		pub, _ := b.embedded.System.PublicKey()
		sysOpts = append(sysOpts, nats.Nkey(pub, b.embedded.System.Sign))
	} else {
		var err error
		if ccfg.Issuer, err = seedFile(b.Issuer, "--bus-issuer"); err != nil {
			return nil, err
		}
		if b.XKey != "" {
			if ccfg.XKey, err = seedFile(b.XKey, "--bus-xkey"); err != nil {
				return nil, err
			}
		}
		o, err := nats.NkeyOptionFromSeed(b.SystemNKey)
		if err != nil {
			return nil, fmt.Errorf("--bus-system-nkey: %w", err)
		}
		sysOpts = append(sysOpts, o)
	}
	if cfg.Conn.TLSCert != "" {
		sysOpts = append(sysOpts, nats.ClientCert(cfg.Conn.TLSCert, cfg.Conn.TLSKey))
	}
	if cfg.Conn.TLSCA != "" {
		sysOpts = append(sysOpts, nats.RootCAs(cfg.Conn.TLSCA))
	}
	co, err := callout.New(ccfg)
	if err != nil {
		return nil, err
	}
	sys, err := nats.Connect(strings.TrimSpace(cfg.Conn.Server), sysOpts...)
	if err != nil {
		return nil, fmt.Errorf("bus: system-account connection: %w", err)
	}
	r := &busRunner{co: co, rev: co.NewRevoker(ctx, sys), sys: sys, ctx: ctx}
	cfg.Service.Revoke = r.rev.Revoke
	return r, nil
}

// serve answers the callout on nc, looking identities up in svc.
func (r *busRunner) serve(nc *nats.Conn, svc *service.Service) error {
	if r == nil {
		return nil
	}
	if err := r.co.Serve(nc, svc); err != nil {
		return err
	}
	if r.co.Mode() == callout.Observe {
		go r.rev.Observe(r.ctx, svc)
	}
	return nil
}

func (r *busRunner) stop() {
	if r == nil {
		return
	}
	_ = r.co.Stop()
	r.sys.Close()
}

// seedFile reads an nkeys seed file.
func seedFile(path, flagName string) (nkeys.KeyPair, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flagName, err)
	}
	kp, err := nkeys.ParseDecoratedNKey(b)
	if err != nil { // a bare curve seed (SX…) is not a decorated key
		kp, err = nkeys.FromSeed(bytes.TrimSpace(b))
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s: not an nkeys seed", flagName, path)
	}
	return kp, nil
}
