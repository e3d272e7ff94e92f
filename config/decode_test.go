package config

import (
	"errors"
	"strings"
	"testing"
)

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []string // every error, in order, as Error() prints it
	}{
		{
			name: "unknown key with suggestion",
			doc:  strings.Replace(minimalDoc, "path: orders.json", "pathh: orders.json", 1),
			want: []string{`backends[0].credential.pathh: unknown key (did you mean "path"?) (line 11)`},
		},
		{
			name: "transposed letters",
			doc:  "admin: {lsiten: 127.0.0.1:1}\n",
			want: []string{`admin.lsiten: unknown key (did you mean "listen"?) (line 1)`},
		},
		{
			name: "unknown key without suggestion",
			doc:  "telemetry: {address: x}\n",
			want: []string{`telemetry: unknown key (line 1)`},
		},
		{
			name: "key that does not look like a field stays out of the path",
			doc:  "admin:\n  \"hunter2 !secret\": 1\n  Hunter2: 2\n  LISTEN: 3\n",
			want: []string{`admin: unknown key (line 2)`, `admin: unknown key (line 3)`, `admin: unknown key (did you mean "listen"?) (line 4)`},
		},
		{
			name: "integer",
			doc:  "backends:\n  - limits:\n      max_client_conns: lots\n",
			want: []string{`backends[0].limits.max_client_conns: must be an integer (line 3)`},
		},
		{
			name: "integer overflow",
			doc:  "backends:\n  - limits: {max_client_conns: 99999999999999999999}\n",
			want: []string{`backends[0].limits.max_client_conns: must be an integer (line 2)`},
		},
		{
			name: "float for integer",
			doc:  "backends:\n  - pool: {max_idle: 1.5}\n",
			want: []string{`backends[0].pool.max_idle: must be an integer (line 2)`},
		},
		{
			name: "boolean",
			doc:  "backends:\n  - client_tls: {required: yes}\n",
			want: []string{`backends[0].client_tls.required: must be true or false (line 2)`},
		},
		{
			name: "duration",
			doc:  "shutdown_timeout: 30\n",
			want: []string{`shutdown_timeout: must be a duration with a unit, such as "30s" or "1m30s" (line 1)`},
		},
		{
			name: "negative duration",
			doc:  "shutdown_timeout: -1s\n",
			want: []string{`shutdown_timeout: must not be negative (line 1)`},
		},
		{
			name: "byte size",
			doc:  "backends:\n  - limits: {max_message_size: 64mb}\n",
			want: []string{`backends[0].limits.max_message_size: must be a size in bytes: an integer, optionally with unit B, KB, KiB, MB, MiB, GB or GiB, such as "64MiB" (line 2)`},
		},
		{
			name: "mapping for string",
			doc:  "admin: {listen: {host: x}}\n",
			want: []string{`admin.listen: must be a string, not a mapping (line 1)`},
		},
		{
			name: "list for duration",
			doc:  "shutdown_timeout: [1s]\n",
			want: []string{`shutdown_timeout: must be a duration, not a list (line 1)`},
		},
		{
			name: "scalar for struct",
			doc:  "admin: 127.0.0.1:9649\n",
			want: []string{`admin: must be a mapping, not a single value (line 1)`},
		},
		{
			name: "mapping for list",
			doc:  "backends: {name: x}\n",
			want: []string{`backends: must be a list, not a mapping (line 1)`},
		},
		{
			name: "empty list entry",
			doc:  "backends:\n  -\n",
			want: []string{`backends[0]: list entry must not be empty (line 2)`},
		},
		{
			name: "duplicate keys",
			doc:  "log:\n  level: info\n  format: json\n  level: debug\n",
			want: []string{`log.level: duplicate key (first on line 2) (line 4)`},
		},
		{
			name: "duplicate top-level key",
			doc:  "backends: []\nadmin: {}\nbackends: []\n",
			want: []string{`backends: duplicate key (first on line 1) (line 3)`},
		},
		{
			name: "non-string key",
			doc:  "admin: {[a]: b}\n",
			want: []string{`admin: keys must be strings, not a list (line 1)`},
		},
		{
			name: "list document",
			doc:  "- a\n- b\n",
			want: []string{`config must be a mapping of keys to values (line 1)`},
		},
		{
			name: "scalar document",
			doc:  "hello\n",
			want: []string{`config must be a mapping of keys to values (line 1)`},
		},
		{name: "empty document", doc: "", want: []string{`config is empty`}},
		{name: "comments only", doc: "# nothing\n", want: []string{`config is empty`}},
		{name: "null document", doc: "~\n", want: []string{`config is empty (line 1)`}},
		{
			name: "two documents",
			doc:  "admin: {}\n---\nadmin: {}\n",
			want: []string{`config must be a single YAML document (line 2)`},
		},
		{
			name: "invalid YAML",
			doc:  "admin: {listen: x\n",
			want: []string{`invalid YAML: line 1: did not find expected ',' or '}'`},
		},
		{
			name: "merge of itself",
			doc:  "admin: &a\n  listen: 127.0.0.1:1\n  <<: *a\n",
			want: []string{`admin: alias refers to a value that contains it (line 3)`},
		},
		{
			name: "alias of the wrong type",
			doc:  "admin: &a\n  listen: *a\n",
			want: []string{`admin.listen: must be a string, not a mapping (line 1)`},
		},
		{
			name: "merge of a scalar",
			doc:  "admin: {<<: 1}\n",
			want: []string{`admin: merge key "<<" needs a mapping or a list of mappings (line 1)`},
		},
		{
			name: "several errors in document order",
			doc: `log: {level: 1}
backends:
  - name: a
    limits: {max_client_conns: x, handshake_timeout: y}
    nmae: b
shutdown_timeout: z
admin: {listne: q}
`,
			want: []string{
				`backends[0].limits.max_client_conns: must be an integer (line 4)`,
				`backends[0].limits.handshake_timeout: must be a duration with a unit, such as "30s" or "1m30s" (line 4)`,
				`backends[0].nmae: unknown key (did you mean "name"?) (line 5)`,
				`shutdown_timeout: must be a duration with a unit, such as "30s" or "1m30s" (line 6)`,
				`admin.listne: unknown key (did you mean "listen"?) (line 7)`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errs := mustFail(t, tt.doc, ParseOptions{})
			var got []string
			for _, e := range errs {
				got = append(got, e.Error())
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("errors\n got: %q\nwant: %q", got, tt.want)
			}
		})
	}
}

func TestFieldError(t *testing.T) {
	_, err := Parse([]byte("admin: {listen: [x]}\n"), ParseOptions{})
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("errors.As(%v, *FieldError) = false", err)
	}
	if fe.Path != "admin.listen" || fe.Msg != "must be a string, not a list (line 1)" {
		t.Errorf("got %+v", fe)
	}
	if got := (&FieldError{Msg: "config is empty"}).Error(); got != "config is empty" {
		t.Errorf("Error() without path = %q", got)
	}
}

func TestExtensionKeysAreUnknown(t *testing.T) {
	// Unlike docker-compose, "x-" keys get no special treatment: anchors
	// must live inside known fields (see TestMerge).
	_, errs := mustFail(t, "x-common: &c {protocol: postgres}\n"+minimalDoc, ParseOptions{})
	if len(errs) != 1 || errs[0].Error() != "unknown key (line 1)" {
		t.Fatalf("want only x-common unknown, got %v", errs)
	}
}

func TestMerge(t *testing.T) {
	doc := `
backends:
  - &a
    name: a
    protocol: postgres
    listen: 127.0.0.1:6432
    upstream: 127.0.0.1:5432
    clients: [&app {user: app, password: pw}]
    credential: {source: file, path: creds.json}
    limits: {max_client_conns: 7}
  - <<: *a
    name: b
    listen: 127.0.0.1:6433
    pool: {max_idle: 0}
  - <<: [{limits: {max_client_conns: 1}}, *a]
    name: c
    listen: 127.0.0.1:6434
    clients: [*app, {<<: *app, user: other}]
`
	c := mustParse(t, doc, ParseOptions{})
	if len(c.Backends) != 3 {
		t.Fatalf("got %d backends", len(c.Backends))
	}
	a, b, cc := c.Backends[0], c.Backends[1], c.Backends[2]
	if b.Name != "b" || b.Upstream != a.Upstream || b.Limits.MaxClientConns != 7 || b.Pool.MaxIdle != 0 {
		t.Errorf("merge into b: %+v", b)
	}
	if a.Pool.MaxIdle != 16 {
		t.Errorf("a.pool.max_idle = %d, want the default 16", a.Pool.MaxIdle)
	}
	if cc.Limits.MaxClientConns != 1 {
		t.Errorf("earlier merged mapping must win: max_client_conns = %d", cc.Limits.MaxClientConns)
	}
	if len(cc.Clients) != 2 || cc.Clients[1].User != "other" || cc.Clients[1].Password != "pw" {
		t.Errorf("clients of c: %+v", cc.Clients)
	}
}

func TestAliasBomb(t *testing.T) {
	// Each level doubles the work of a naive walk: 2^30 visits.
	var b strings.Builder
	b.WriteString("log: &l0 {level: info}\nbackends:\n")
	b.WriteString("  - name: x\n    limits: &k0 {}\n")
	prev := "k0"
	for i := 1; i <= 30; i++ {
		cur := "k" + strings.Repeat("i", i)
		b.WriteString("  - limits: &" + cur + " {<<: [*" + prev + ", *" + prev + "]}\n")
		prev = cur
	}
	_, errs := mustFail(t, b.String(), ParseOptions{})
	if !hasError(errs, "", "config is too complex") {
		t.Errorf("want a complexity error, got %v", errs)
	}
}

func TestSuggest(t *testing.T) {
	fields := []field{{name: "listen"}, {name: "token_file"}, {name: "upstream"}}
	tests := []struct{ key, want string }{
		{"listen", "listen"},
		{"Listen", "listen"},
		{"lisen", "listen"},
		{"listne", "listen"},
		{"lstne", "listen"},
		{"tokenfile", "token_file"},
		{"token-file", "token_file"},
		{"upsrm", ""},
		{"foo", ""},
		{strings.Repeat("x", 1000), ""},
	}
	for _, tt := range tests {
		if got := suggest(tt.key, fields); got != tt.want {
			t.Errorf("suggest(%q) = %q, want %q", tt.key, got, tt.want)
		}
	}
}

func TestManyErrorsAreCapped(t *testing.T) {
	// 300 backends × 300 clients × 300 unknown keys from a 12 KB document:
	// more problems than anyone reads, and more values than maxVisits.
	var b strings.Builder
	b.WriteString("log:\n  x: &m {")
	for i := range 300 {
		b.WriteString("k" + strings.Repeat("q", i%50) + string(rune('a'+i%26)) + string(rune('a'+i/26)) + ": 1, ")
	}
	b.WriteString("}\n  y: &c {clients: [" + strings.Repeat("*m, ", 300) + "]}\n")
	b.WriteString("backends: [" + strings.Repeat("*c, ", 300) + "]\n")

	_, errs := mustFail(t, b.String(), ParseOptions{})
	// maxIssues unknown keys, the explanation and the count of the rest.
	if len(errs) != maxIssues+2 {
		t.Fatalf("got %d errors, want %d", len(errs), maxIssues+2)
	}
	if first := errs[0]; first.Path != "" || !strings.HasPrefix(first.Msg, "config is too complex") {
		t.Errorf("first error = %v", first)
	}
	if last := errs[len(errs)-1]; last.Path != "" || !strings.HasSuffix(last.Msg, "more problems not shown") {
		t.Errorf("last error = %v", last)
	}
}
