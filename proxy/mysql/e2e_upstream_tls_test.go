package mysql_test

import (
	"context"
	"strings"
	"testing"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/creds"
	"github.com/credswap/credswap/internal/app"
	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
)

// TestUpstreamTLS: with upstream_tls the backend connections are
// encrypted (the database reports a TLS version for the session), whether
// the login guard makes the TLS handshake (upstream_auth scramble) or
// go-mysql does (any), and verify-full refuses a server whose certificate
// another CA signed.
func TestUpstreamTLS(t *testing.T) {
	m := testenv.MariaDBServer(t)
	db := m.CreateDatabase(t)
	user, password := m.CreateUser(t, "tls")
	m.Grant(t, user, db)
	for _, mode := range []string{"require", "verify-ca", "verify-full"} {
		for _, auth := range []string{"scramble", "any"} {
			t.Run(mode+"/"+auth, func(t *testing.T) {
				p := proxytest.StartMySQL(t, m, user, password, func(c *config.Config) {
					c.Backends[0].UpstreamTLS = config.UpstreamTLS{Mode: mode, CAFile: m.CA.CertFile, ServerName: "localhost"}
					c.Backends[0].UpstreamAuth = auth
				})
				c := conn(t, p, db, "")
				if v := queryString(t, c, "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'SSL_VERSION'"); !strings.HasPrefix(v, "TLS") {
					t.Fatalf("backend session SSL_VERSION = %q, want TLS", v)
				}
			})
		}
	}

	// A CA that did not sign the server's certificate.
	other := testenv.TestCA(t)
	bc := config.Backend{Name: "my", Protocol: "mysql", Upstream: m.Addr(),
		UpstreamTLS: config.UpstreamTLS{Mode: "verify-full", CAFile: other.CertFile, ServerName: "localhost"},
		Credential:  config.Credential{Source: "static"}}
	bc.Limits.ConnectTimeout = config.Duration(5e9)
	d, err := app.NewMySQLDialer(bc)
	if err != nil {
		t.Fatal(err)
	}
	err = d.Verify(context.Background(), creds.Credential{Username: user, Password: password})
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("verify-full against a certificate of another CA: %v", err)
	}
	if strings.Contains(err.Error(), password) {
		t.Fatal("the password appears in the error")
	}
}
