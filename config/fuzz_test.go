package config

import (
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics, that a failure always comes with
// a nil Config and non-empty messages, and that a success is a Config that
// honours the basic invariants validation promises.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		minimalDoc,
		fullDoc,
		"",
		"~",
		"- a",
		"admin: {listen: ${X:-127.0.0.1:1}}",
		"a: &a {b: *a}",
		"backends: [&b {<<: *b}]",
		"backends:\n  - <<: [{name: a}, {name: b}]\n",
		"log: {level: info, level: debug}",
		"backends: [{limits: {max_message_size: 9999999999999GiB}}]",
		"a: b\n---\nc: d\n",
		"? [a]\n: b\n",
		"backends: [{clients: [{password: $${X}$}]}]",
	} {
		f.Add([]byte(seed))
	}
	env := envMap(map[string]string{"X": "x", "APP_PASSWORD": "pw"})
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, ParseOptions{LookupEnv: env, BaseDir: "/base"})
		if err != nil {
			if cfg != nil {
				t.Fatal("non-nil Config with an error")
			}
			for _, e := range fieldErrors(t, err) {
				if strings.TrimSpace(e.Msg) == "" {
					t.Fatalf("empty message in %q", err)
				}
			}
			return
		}
		if len(cfg.Backends) == 0 {
			t.Fatal("valid Config without backends")
		}
		for _, b := range cfg.Backends {
			if !isBackendName(b.Name) || len(b.Clients) == 0 || b.Limits.MaxClientConns < 1 || b.Pool.MaxIdle < 0 {
				t.Fatalf("invalid backend accepted: %+v", b)
			}
		}
	})
}
