package config

import (
	"strings"
	"testing"
)

// TestErrorsNeverContainSecrets parses documents that fail in many ways
// around secret values and checks that no secret reaches the error text.
func TestErrorsNeverContainSecrets(t *testing.T) {
	const (
		envSecret     = "Env-S3cret-9f1c"
		literalSecret = "Literal-S3cret-77aa"
		hashSecret    = "SCRAM-SHA-256$4096:Hash-S3cret-b0b0"
	)
	env := envMap(map[string]string{"APP_PASSWORD": envSecret})
	secrets := []string{envSecret, literalSecret, hashSecret, "Hash-S3cret"}

	docs := map[string]string{
		"decoding fails elsewhere": `
backends:
  - name: orders
    protocol: postgres
    listen: 127.0.0.1:6432
    upstream: 127.0.0.1:5432
    clients:
      - {user: app, password: "${APP_PASSWORD}"}
      - {user: lit, password: ` + literalSecret + `}
    credential: {source: file, pathh: x}
    limits: {max_client_conns: many}
`,
		"validation fails elsewhere and on the password itself": `
backends:
  - name: Orders
    protocol: mysql
    listen: nowhere
    upstream: 127.0.0.1:5432
    clients:
      - {user: app, password: "${APP_PASSWORD}", password_file: f, auth: password}
      - {user: lit, password: ` + literalSecret + `, auth: md5x}
      - {user: hash, password_hash: "` + hashSecret + `", auth: md5}
    credential: {source: vault-kv}
`,
		"secret value of the wrong type": `
backends:
  - clients:
      - {user: app, password: ["${APP_PASSWORD}"]}
      - {user: lit, password: {` + literalSecret + `: 1}}
      - {user: hash, password_hash: [` + hashSecret + `]}
`,
		"secret as a type error on another field": `
backends:
  - limits: {max_client_conns: "${APP_PASSWORD}", max_message_size: ` + literalSecret + `}
    drain_deadline: "${APP_PASSWORD}"
    client_tls: {required: ` + literalSecret + `}
`,
		"secret written as a key": `
backends:
  - clients:
      - {user: app, ` + literalSecret + `}
      - user: other
        ` + envSecret + `: x
`,
		"secret next to a broken expansion": `
admin: {listen: "${APP_PASSWORD"}
backends:
  - clients:
      - {user: app, password: "` + literalSecret + `${UNSET}"}
      - {user: b, password: "${` + literalSecret + `}"}
`,
		"plain HTTP Vault address with credentials in it": `
vault:
  address: "http://` + literalSecret + `@vault.internal:8200/?token=${APP_PASSWORD}"
  auth: {method: token, token: "${APP_PASSWORD}"}
backends:
  - name: orders
    protocol: postgres
    listen: 127.0.0.1:6432
    upstream: 127.0.0.1:5432
    clients: [{user: app, password: x}]
    credential: {source: vault-kv, path: orders/db}
`,
		"invalid YAML after a secret": "backends:\n  - clients: [{user: app, password: " + literalSecret + "}]\n    name: [\n",
	}
	for name, doc := range docs {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(doc), ParseOptions{LookupEnv: env})
			if err == nil {
				t.Fatal("want an error")
			}
			for _, s := range secrets {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error contains secret %q:\n%v", s, err)
				}
			}
		})
	}
}
