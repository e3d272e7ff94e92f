package creds

import (
	"strings"
	"testing"
)

func TestEnvSource(t *testing.T) {
	env := map[string]string{"DB_USER": "orders", "DB_PASSWORD": "env-secret-1"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	src := NewEnvSource("DB_USER", "DB_PASSWORD", lookup)
	if src.Kind() != "env" {
		t.Fatalf("Kind = %q", src.Kind())
	}
	c1 := mustFetch(t, src)
	if c1.Username != "orders" || c1.Password != "env-secret-1" || c1.Source != "env" {
		t.Fatalf("got %v", c1)
	}
	checkVersion(t, c1.Version)
	if c := mustFetch(t, src); c.Version != c1.Version {
		t.Fatal("version changed without a change")
	}
	env["DB_PASSWORD"] = "env-secret-2"
	if c := mustFetch(t, src); c.Version == c1.Version || c.Password != "env-secret-2" {
		t.Fatalf("after change: %v", c)
	}
	env["DB_PASSWORD"] = ""
	if c := mustFetch(t, src); c.Password != "" {
		t.Fatalf("empty password: %v", c)
	}

	for _, tc := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"no username", map[string]string{"DB_PASSWORD": "env-secret-3"}, "environment variable DB_USER is not set"},
		{"empty username", map[string]string{"DB_USER": "", "DB_PASSWORD": "env-secret-3"}, "environment variable DB_USER is empty"},
		{"no password", map[string]string{"DB_USER": "env-user-3"}, "environment variable DB_PASSWORD is not set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := NewEnvSource("DB_USER", "DB_PASSWORD", func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
			_, err := src.Fetch(t.Context())
			if err == nil || err.Error() != tc.want {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			for _, v := range tc.env {
				if v != "" && strings.Contains(err.Error(), v) {
					t.Fatalf("error %q contains a value", err)
				}
			}
		})
	}
}

func TestEnvSourceDefaultsToProcessEnvironment(t *testing.T) {
	t.Setenv("CREDSWAP_TEST_USER", "procuser")
	t.Setenv("CREDSWAP_TEST_PASSWORD", "procpass")
	c := mustFetch(t, NewEnvSource("CREDSWAP_TEST_USER", "CREDSWAP_TEST_PASSWORD", nil))
	if c.Username != "procuser" || c.Password != "procpass" {
		t.Fatalf("got %v", c)
	}
}

func TestStaticSource(t *testing.T) {
	src := NewStaticSource(Credential{Username: "u", Password: "p"})
	if c := mustFetch(t, src); src.Kind() != "static" || c.Source != "static" || c.Password != "p" {
		t.Fatalf("got %v from %s", c, src.Kind())
	}
	if _, err := NewStaticSource(Credential{}).Fetch(t.Context()); err == nil {
		t.Fatal("zero credential accepted")
	}
}
