package e2e

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/unibus/membership/client"
	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/internal/membertest"
	"github.com/unibus/membership/internal/natstest"
	"github.com/unibus/membership/service"
	"github.com/unibus/membership/subjects"
)

// authServer starts a nats-server with the accounts and permissions of
// docs/deploy/accounts.conf (the deployment's own file, not a copy), with
// one service user and two client users: the second is the file's client
// entry with its own nkey and inbox prefix, as the file says to add one per
// client. It returns the server and the three users' key pairs.
func authServer(t *testing.T) (s *server.Server, svcUser, client1, client2 nkeys.KeyPair) {
	t.Helper()
	newUser := func() (nkeys.KeyPair, string) {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := kp.PublicKey()
		return kp, pub
	}
	svcUser, svcPub := newUser()
	client1, c1Pub := newUser()
	client2, c2Pub := newUser()
	t.Setenv("MEMBERSHIP_SERVICE_NKEY", svcPub)
	t.Setenv("MEMBERSHIP_CLIENT_NKEY", c1Pub)
	_, opPub := newUser()
	t.Setenv("MEMBERSHIP_OPERATOR_NKEY", opPub)

	dir := t.TempDir()
	accounts, err := os.ReadFile(filepath.Join("..", "docs", "deploy", "accounts.conf"))
	if err != nil {
		t.Fatalf("docs/deploy/accounts.conf: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "accounts.conf"), accounts, 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(conf, []byte("listen: 127.0.0.1:-1\ninclude ./accounts.conf\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("load the deployment's permissions: %v", err)
	}
	var c1 *server.NkeyUser
	for _, u := range opts.Nkeys {
		if u.Nkey == c1Pub {
			c1 = u
		}
	}
	if c1 == nil || c1.Permissions == nil || c1.Permissions.Subscribe == nil {
		t.Fatal("accounts.conf has no client user with subscribe permissions")
	}
	perms := *c1.Permissions
	sub := *perms.Subscribe
	sub.Allow = []string{"_INBOX_client2.>"}
	perms.Subscribe = &sub
	opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: c2Pub, Permissions: &perms, Account: c1.Account})
	opts.StoreDir = filepath.Join(dir, "js")
	return natstest.ServerWith(t, opts), svcUser, client1, client2
}

// nkeyAuth authenticates a connection as kp.
func nkeyAuth(kp nkeys.KeyPair) nats.Option {
	pub, _ := kp.PublicKey()
	return nats.Nkey(pub, kp.Sign)
}

// violations collects a connection's asynchronous permission errors.
func violations(ch chan error) nats.Option {
	return nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			select {
			case ch <- err:
			default:
			}
		}
	})
}

// TestNATSPermissions runs the service under the deployment's nkey users
// and narrow permissions: a client works through its own inbox prefix, but
// cannot subscribe to the service subjects (so it can neither eavesdrop on
// requests nor pose as a responder), cannot read another client's or the
// service's inbox, and cannot reach the buckets through $KV or $JS.
func TestNATSPermissions(t *testing.T) {
	s, svcUser, c1, c2 := authServer(t)
	ctx := natstest.Ctx(t, 6)

	// The service under its user.
	snc := natstest.Connect(t, s, nkeyAuth(svcUser))
	st := membertest.Store(t, snc)
	spub := membertest.ServicePub()
	svc, err := service.Start(snc, st, service.Config{ServiceKey: membertest.ServiceKey()})
	if err != nil {
		t.Fatalf("service under the deployment's service user: %v", err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	adminID, _ := identity.New("admin")
	adminPub, _ := adminID.Public()
	if _, err := service.Bootstrap(ctx, st, adminPub); err != nil {
		t.Fatal(err)
	}

	errs1 := make(chan error, 16)
	nc1 := natstest.Connect(t, s, nkeyAuth(c1), nats.CustomInboxPrefix("_INBOX_client"), violations(errs1), nats.PermissionErrOnSubscribe(true))
	nc2 := natstest.Connect(t, s, nkeyAuth(c2), nats.CustomInboxPrefix("_INBOX_client2"))
	admin := client.New(nc1, adminID, client.WithServiceKey(spub))

	t.Run("client works through its inbox", func(t *testing.T) {
		if _, err := admin.Whoami(ctx); err != nil {
			t.Fatalf("whoami: %v", err)
		}
		if _, _, err := admin.CreateRoom(ctx, "r1", "chat.r1", nil); err != nil {
			t.Fatalf("create room: %v", err)
		}
	})

	denied := func(t *testing.T, nc *nats.Conn, subject string, trigger func()) {
		t.Helper()
		sub, err := nc.SubscribeSync(subject)
		if err != nil {
			t.Fatalf("subscribe %s: %v", subject, err)
		}
		defer func() { _ = sub.Unsubscribe() }()
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		trigger()
		m, err := sub.NextMsg(natstest.Patience)
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("subscribe %s: got message %v, error %v; want a permissions violation", subject, m, err)
		}
	}
	request := func() { // a request that would cross every listed subject if allowed
		if _, err := client.New(nc2, adminID, client.WithServiceKey(spub)).Room(ctx, "r1"); err != nil {
			t.Errorf("request from the second client: %v", err)
		}
	}

	for _, subject := range []string{
		subjects.DefaultPrefix + ".>",
		subjects.Subject(subjects.DefaultPrefix, subjects.OpRoomKey),
		subjects.Subject(subjects.DefaultPrefix, subjects.OpRoomGet),
		">",
	} {
		t.Run("no subscription to "+subject, func(t *testing.T) { denied(t, nc1, subject, request) })
	}
	for _, subject := range []string{"_INBOX_client2.>", "_INBOX.>"} {
		t.Run("no reading the inbox "+subject, func(t *testing.T) { denied(t, nc1, subject, request) })
	}
	for _, subject := range []string{"$KV.membership.>", "$KV.membership-rooms-0.>", "$JS.API.>", "$O.membership-keys.>"} {
		t.Run("no subscription to "+subject, func(t *testing.T) { denied(t, nc1, subject, func() {}) })
	}

	t.Run("no JetStream API", func(t *testing.T) {
		js := natstest.JetStream(t, nc1)
		for name, call := range map[string]func(context.Context) error{
			"bind the KV bucket": func(ctx context.Context) error {
				_, err := js.KeyValue(ctx, subjects.DefaultBucket)
				return err
			},
			"bind the object store": func(ctx context.Context) error {
				_, err := js.ObjectStore(ctx, subjects.DefaultKeysBucket)
				return err
			},
			"delete the KV stream": func(ctx context.Context) error {
				return js.DeleteStream(ctx, "KV_"+subjects.DefaultBucket)
			},
			"purge the KV stream": func(ctx context.Context) error {
				st, err := js.Stream(ctx, "KV_"+subjects.DefaultBucket)
				if err != nil {
					return err
				}
				return st.Purge(ctx)
			},
		} {
			drain(errs1)
			jctx, jcancel := context.WithTimeout(ctx, time.Second)
			err := call(jctx)
			jcancel()
			if err == nil {
				t.Fatalf("client could %s", name)
			}
			awaitViolation(t, errs1)
		}
		sjs, _ := jetstream.New(snc)
		if _, err := sjs.Stream(ctx, "KV_"+subjects.DefaultBucket); err != nil {
			t.Fatalf("KV stream after the client's attempts: %v", err)
		}
	})

	t.Run("no direct KV writes", func(t *testing.T) {
		before := membertest.Dump(t, snc)
		drain(errs1)
		for _, key := range []string{"room.r1", "nonce.forged", "id.mallory", "audit.room.r1.000000000001"} {
			if err := nc1.Publish("$KV."+subjects.DefaultBucket+"."+key, []byte("forged")); err != nil {
				t.Fatal(err)
			}
		}
		if err := nc1.Flush(); err != nil {
			t.Fatal(err)
		}
		awaitViolation(t, errs1)
		membertest.SameDump(t, before, membertest.Dump(t, snc))
		r, err := admin.Room(ctx, "r1")
		if err != nil || r.Owner != "admin" {
			t.Fatalf("room after forged writes: %+v %v", r, err)
		}
	})
}

func awaitViolation(t *testing.T, ch chan error) {
	t.Helper()
	select {
	case err := <-ch:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("async error %v", err)
		}
	case <-time.After(natstest.Patience):
		t.Fatal("no permissions violation reported")
	}
}

// drain empties ch of earlier errors.
func drain(ch chan error) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}
