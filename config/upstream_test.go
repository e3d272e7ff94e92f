package config

import (
	"reflect"
	"strings"
	"testing"
)

// TestUpstreamAuthDefault: without upstream_auth, a backend whose upstream
// TLS verifies the server answers whatever it asks; any other mode keeps
// the password from whoever answers (SCRAM on PostgreSQL, scrambles on
// MySQL). An explicit value is kept whatever the mode.
func TestUpstreamAuthDefault(t *testing.T) {
	tests := []struct {
		protocol, tls, auth, want string
	}{
		{"postgres", "", "", "scram-sha-256"},
		{"postgres", "require", "", "scram-sha-256"},
		{"postgres", "verify-ca", "", "scram-sha-256"},
		{"postgres", "verify-full", "", "any"},
		{"postgres", "verify-full", "scram-sha-256", "scram-sha-256"},
		{"postgres", "disable", "md5", "md5"},
		{"mysql", "", "", "scramble"},
		{"mysql", "require", "", "scramble"},
		{"mysql", "verify-ca", "", "scramble"},
		{"mysql", "verify-full", "", "any"},
		{"mysql", "verify-full", "scramble", "scramble"},
	}
	for _, tt := range tests {
		t.Run(tt.protocol+"/"+tt.tls+"/"+tt.auth, func(t *testing.T) {
			doc := strings.Replace(minimalDoc, "protocol: postgres", "protocol: "+tt.protocol, 1)
			if tt.tls != "" {
				doc += "    upstream_tls: {mode: " + tt.tls + "}\n"
			}
			if tt.auth != "" {
				doc += "    upstream_auth: " + tt.auth + "\n"
			}
			if got := mustParse(t, doc, ParseOptions{}).Backends[0].UpstreamAuth; got != tt.want {
				t.Errorf("upstream_auth = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestUpstreamOnLoopback(t *testing.T) {
	for upstream, want := range map[string]bool{
		"127.0.0.1:5432":     true,
		"127.0.0.53:5432":    true,
		"[::1]:5432":         true,
		"localhost:5432":     true,
		"LocalHost:5432":     true,
		"db.internal:5432":   false,
		"10.0.0.5:5432":      false,
		"localhost.evil:123": false,
		"[2001:db8::1]:5432": false,
	} {
		if got := (Backend{Upstream: upstream}).UpstreamOnLoopback(); got != want {
			t.Errorf("UpstreamOnLoopback(%s) = %v, want %v", upstream, got, want)
		}
	}
}

// TestSecretFiles lists the files holding passwords, tokens and private
// keys, and none of the certificates, CA bundles or public keys.
func TestSecretFiles(t *testing.T) {
	doc := `
admin: {token_file: token}
vault:
  address: https://vault.internal:8200
  ca_file: vault-ca.pem
  auth: {method: approle, role_id: r, secret_id_file: secret-id}
backends:
  - name: orders
    protocol: mysql
    listen: 127.0.0.1:6432
    upstream: db:3306
    upstream_tls: {mode: verify-full, ca_file: ca.pem, cert_file: client.pem, key_file: client.key}
    upstream_auth: scramble
    upstream_rsa_public_key_file: db-public.pem
    client_tls: {cert_file: server.pem, key_file: server.key}
    clients: [{user: app, password_file: app-password}, {user: b, password: x}]
    credential: {source: file, path: orders}
    rotation:
      strategy: alternating-users
      users: [a, b]
      admin_credential: {source: file, path: admin.json}
`
	got := SecretFiles(mustParse(t, doc, ParseOptions{BaseDir: "/etc/credswap"}))
	want := []SecretFile{
		{"admin.token_file", "/etc/credswap/token"},
		{"vault.auth.secret_id_file", "/etc/credswap/secret-id"},
		{"backends[0].upstream_tls.key_file", "/etc/credswap/client.key"},
		{"backends[0].client_tls.key_file", "/etc/credswap/server.key"},
		{"backends[0].clients[0].password_file", "/etc/credswap/app-password"},
		{"backends[0].credential.path", "/etc/credswap/orders"},
		{"backends[0].rotation.admin_credential.path", "/etc/credswap/admin.json"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("SecretFiles\n got: %v\nwant: %v", got, want)
	}
}
