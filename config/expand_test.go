package config

import (
	"strings"
	"testing"
)

func TestExpand(t *testing.T) {
	env := envMap(map[string]string{
		"USER":  "alice",
		"EMPTY": "",
		"DOLS":  "a$$b${USER}",
		"PORT":  "6432",
	})
	tests := []struct {
		in, want, err string
	}{
		{in: "plain", want: "plain"},
		{in: "${USER}", want: "alice"},
		{in: "x-${USER}-y", want: "x-alice-y"},
		{in: "${USER}${USER}", want: "alicealice"},
		{in: "${MISSING:-fallback}", want: "fallback"},
		{in: "${EMPTY:-fallback}", want: "fallback"},
		{in: "${USER:-fallback}", want: "alice"},
		{in: "${MISSING:-}", want: ""},
		{in: "${MISSING:-a:-b}", want: "a:-b"},
		{in: "${EMPTY}", want: ""},
		{in: "$$", want: "$"},
		{in: "$${USER}", want: "${USER}"},
		{in: "$$$${USER}", want: "$${USER}"},
		{in: "$$${USER}", want: "$alice"},
		{in: "pa$word", want: "pa$word"},
		{in: "trailing$", want: "trailing$"},
		{in: "$1$2", want: "$1$2"},
		{in: "${DOLS}", want: "a$$b${USER}"}, // not expanded again
		{in: "127.0.0.1:${PORT}", want: "127.0.0.1:6432"},
		{in: "${MISSING}", err: "environment variable MISSING is not set"},
		{in: "a${USER", err: `unterminated "${"`},
		{in: "${}", err: "invalid variable name"},
		{in: "${1X}", err: "invalid variable name"},
		{in: "${A B}", err: "invalid variable name"},
		{in: "${A-b}", err: "invalid variable name"},
	}
	for _, tt := range tests {
		got, err := expand(tt.in, env)
		switch {
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("expand(%q) error = %v, want %q", tt.in, err, tt.err)
		case tt.err == "" && err != nil:
			t.Errorf("expand(%q) error = %v", tt.in, err)
		case tt.err == "" && got != tt.want:
			t.Errorf("expand(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestExpandNilLookup(t *testing.T) {
	if _, err := expand("${HOME}", nil); err == nil {
		t.Error("with no LookupEnv every variable must be unset")
	}
	if got, _ := expand("${HOME:-d}", nil); got != "d" {
		t.Errorf("default with nil lookup = %q", got)
	}
}

func TestParseExpansion(t *testing.T) {
	doc := `
backends:
  - name: ${NAME}
    protocol: postgres
    listen: 127.0.0.1:${PORT:-6432}
    upstream: ${DB_HOST}:5432
    clients:
      - {user: app, password: "${APP_PASSWORD}"}
      - {user: cost, password: "$$5"}
    credential: {source: file, path: "${CREDS_DIR:-/etc/credswap}/orders.json"}
    limits: {max_client_conns: "${MAX_CONNS}", max_message_size: "${MSG:-1MiB}"}
    client_tls: {required: "${TLS_REQUIRED:-false}"}
`
	env := envMap(map[string]string{
		"NAME":         "orders",
		"DB_HOST":      "db.internal",
		"APP_PASSWORD": "it's: {a} #secret",
		"MAX_CONNS":    "25",
	})
	c := mustParse(t, doc, ParseOptions{LookupEnv: env})
	b := c.Backends[0]
	checks := []struct{ name, got, want string }{
		{"name", b.Name, "orders"},
		{"listen", b.Listen, "127.0.0.1:6432"},
		{"upstream", b.Upstream, "db.internal:5432"},
		{"password", b.Clients[0].Password, "it's: {a} #secret"},
		{"literal $", b.Clients[1].Password, "$5"},
		{"path", b.Credential.Path, "/etc/credswap/orders.json"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %q, want %q", ch.name, ch.got, ch.want)
		}
	}
	if b.Limits.MaxClientConns != 25 || b.Limits.MaxMessageSize != 1<<20 || b.ClientTLS.Required {
		t.Errorf("typed expansions: %+v %+v", b.Limits, b.ClientTLS)
	}

	// An unset variable is an error at the field that uses it.
	partial := envMap(map[string]string{"NAME": "orders", "APP_PASSWORD": "x", "MAX_CONNS": "1"})
	_, errs := mustFail(t, doc, ParseOptions{LookupEnv: partial})
	if len(errs) != 1 || errs[0].Error() != "backends[0].upstream: environment variable DB_HOST is not set (line 6)" {
		t.Errorf("got %v", errs)
	}

	// Keys are never expanded.
	_, errs = mustFail(t, "${KEY}: 1\n", ParseOptions{LookupEnv: envMap(map[string]string{"KEY": "admin"})})
	if len(errs) != 1 || errs[0].Msg != "unknown key (line 1)" {
		t.Errorf("got %v", errs)
	}
}
