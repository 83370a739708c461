package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/unibus/membership/identity"
	"github.com/unibus/membership/internal/natstest"
)

// tlsFiles are PEM files of a test CA, a server certificate for 127.0.0.1
// and a client certificate, both signed by the CA.
type tlsFiles struct{ ca, serverCert, serverKey, clientCert, clientKey string }

// writeTLS makes a CA and two certificates in dir.
func writeTLS(t *testing.T, dir string) tlsFiles {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	f := tlsFiles{ca: filepath.Join(dir, "ca.pem")}
	writePEM(t, f.ca, "CERTIFICATE", caDER)
	leaf := func(serial int64, name string, usage x509.ExtKeyUsage) (string, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, _ := x509.MarshalECPrivateKey(key)
		cert, keyFile := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		writePEM(t, cert, "CERTIFICATE", der)
		writePEM(t, keyFile, "EC PRIVATE KEY", keyDER)
		return cert, keyFile
	}
	f.serverCert, f.serverKey = leaf(2, "server", x509.ExtKeyUsageServerAuth)
	f.clientCert, f.clientKey = leaf(3, "client", x509.ExtKeyUsageClientAuth)
	return f
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestConnectTLS runs membershipd and memberctl against a server that
// requires mutual TLS, with the nats CLI's --tlsca/--tlscert/--tlskey.
func TestConnectTLS(t *testing.T) {
	dir := t.TempDir()
	f := writeTLS(t, dir)
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: f.serverCert, KeyFile: f.serverKey, CaFile: f.ca, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	s := natstest.ServerWith(t, &server.Options{TLSConfig: tc, TLS: true, TLSVerify: true, TLSTimeout: 5})
	url := "tls://" + s.Addr().String()
	tlsArgs := []string{"--tlsca", f.ca, "--tlscert", f.clientCert, "--tlskey", f.clientKey}
	adminFile := filepath.Join(dir, "admin.id")
	d := startDaemon(t, append([]string{"--server", url, "--service-key", writeServiceKey(t, dir), "--bootstrap-admin", adminFile}, tlsArgs...)...)
	defer d.stop(t)

	c := &ctl{t: t, bin: natstest.Build(t, memberctlPkg), dir: dir, server: url}
	if r := c.run(append([]string{"--identity", adminFile, "whoami"}, tlsArgs...)...); r.code != 0 || !strings.Contains(r.stdout, "admin") {
		t.Fatalf("memberctl over mutual TLS: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := c.run("--identity", adminFile, "--tlsca", f.ca, "whoami"); r.code != exitLocal {
		t.Fatalf("memberctl without a client certificate: exit %d, want %d\n%s", r.code, exitLocal, r.stderr)
	}
}

// TestConnectUserInboxPrefix: a NATS user that may subscribe only to its
// own inbox prefix (as docs/deploy.md's client user) works with
// --inbox-prefix, and without it gets a hint that names the flag instead
// of "raise --timeout". The daemon logs in with --user/--password.
func TestConnectUserInboxPrefix(t *testing.T) {
	s := natstest.ServerWith(t, &server.Options{Users: []*server.User{
		{Username: "svc", Password: "svc-pw"},
		{Username: "cli", Password: "cli-pw", Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{"unibus.membership.v1.>"}},
			Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX_cli.>"}},
		}},
	}})
	dir := t.TempDir()
	adminFile := filepath.Join(dir, "admin.id")
	id, _ := identity.New("admin")
	if err := identity.Write(adminFile, id); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "--server", s.ClientURL(), "--user", "svc", "--password", "svc-pw",
		"--service-key", writeServiceKey(t, dir), "--bootstrap-admin", adminFile)
	defer d.stop(t)

	c := &ctl{t: t, bin: natstest.Build(t, memberctlPkg), dir: dir, server: s.ClientURL()}
	user := []string{"--user", "cli", "--password", "cli-pw", "--identity", adminFile, "--timeout", "1s"}
	if r := c.run(append(user, "--inbox-prefix", "_INBOX_cli", "whoami")...); r.code != 0 || !strings.Contains(r.stdout, "admin") {
		t.Fatalf("client user with its inbox prefix: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r := c.run(append(user, "whoami")...)
	if r.code != exitLocal || !strings.Contains(r.stderr, "--inbox-prefix") {
		t.Fatalf("client user without its inbox prefix: exit %d, want %d and a hint naming --inbox-prefix\n%s", r.code, exitLocal, r.stderr)
	}
}
