package config

import (
	"errors"
	"strings"
	"testing"
)

// Valid verifiers of the password "secret" (md5 for user "legacy").
const (
	testSCRAMHash = "SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$bpSY5Ze9NUH+I35LC3gVq+DpBfK46iXBxvhAKqVu9pE=:VpYlBuxyzeCI1KnctrefdljpB1mk3Gp7sBI/t11+NkQ="
	testMD5Hash   = "md5ea83fb874e4911ecd72b15e5bdf57300"
)

// minimalDoc is the smallest valid document: everything else defaults.
const minimalDoc = `
backends:
  - name: orders
    protocol: postgres
    listen: 127.0.0.1:6432
    upstream: 127.0.0.1:5432
    clients:
      - {user: app, password_file: app-password}
    credential:
      source: file
      path: orders.json
`

// envMap returns a LookupEnv backed by m.
func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// mustParse parses doc and fails the test on error.
func mustParse(t *testing.T, doc string, opts ParseOptions) *Config {
	t.Helper()
	cfg, err := Parse([]byte(doc), opts)
	if err != nil {
		t.Fatalf("Parse: unexpected error:\n%v", err)
	}
	return cfg
}

// mustFail parses doc, fails the test unless it is rejected, and returns
// the *FieldErrors found.
func mustFail(t *testing.T, doc string, opts ParseOptions) (error, []*FieldError) {
	t.Helper()
	cfg, err := Parse([]byte(doc), opts)
	if err == nil {
		t.Fatalf("Parse: want an error, got none")
	}
	if cfg != nil {
		t.Errorf("Parse: want a nil Config with an error")
	}
	return err, fieldErrors(t, err)
}

// fieldErrors unpacks the joined errors and checks each is a *FieldError.
func fieldErrors(t *testing.T, err error) []*FieldError {
	t.Helper()
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	out := make([]*FieldError, 0, len(errs))
	for _, e := range errs {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("error %q is not a *FieldError", e)
		}
		out = append(out, fe)
	}
	return out
}

// hasError reports whether errs holds one with the given path whose message
// contains msg.
func hasError(errs []*FieldError, path, msg string) bool {
	for _, e := range errs {
		if e.Path == path && strings.Contains(e.Msg, msg) {
			return true
		}
	}
	return false
}
