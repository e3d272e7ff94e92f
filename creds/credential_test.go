package creds

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

const testSecret = "hunter2-Sup3rS3cret"

func secretCredential() Credential {
	return Credential{
		Username: "orders_app",
		Password: testSecret,
		Version:  "0123456789abcdef",
		Source:   "file",
		Expiry:   time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC),
		LeaseID:  "database/creds/orders/abc",
	}
}

func TestCredentialFmtRedacts(t *testing.T) {
	c := secretCredential()
	g := Generation{N: 3, Cred: c, Verified: true}
	type holder struct {
		C Credential
		P *Credential
	}
	// %p is left out: fmt prints a non-pointer under %p by reflection without
	// calling Format, so it would show the password. go vet's printf check
	// rejects %p with a non-pointer argument.
	verbs := []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10v", "%-40s", "%T %v"}
	args := map[string]any{
		"value":      c,
		"pointer":    &c,
		"generation": g,
		"genptr":     &g,
		"struct":     holder{C: c, P: &c},
		"slice":      []Credential{c},
		"map":        map[string]Credential{"k": c},
	}
	for name, arg := range args {
		for _, verb := range verbs {
			out := fmt.Sprintf(verb, arg)
			if strings.Contains(out, testSecret) {
				t.Errorf("fmt %s of %s prints the password: %s", verb, name, out)
			}
		}
	}
	if out := fmt.Sprintf("%p", &c); strings.Contains(out, testSecret) {
		t.Errorf("%%p of a pointer prints the password: %s", out)
	}
	for name, out := range map[string]string{
		"String":   c.String(),
		"GoString": c.GoString(),
		"Sprint":   fmt.Sprint(c),
		"Sprintln": fmt.Sprintln(c, &c),
	} {
		if strings.Contains(out, testSecret) {
			t.Errorf("%s prints the password: %s", name, out)
		}
		if !strings.Contains(out, c.Username) || !strings.Contains(out, redacted) {
			t.Errorf("%s = %q, want the username and %q", name, out, redacted)
		}
	}
}

func TestCredentialJSONRedacts(t *testing.T) {
	c := secretCredential()
	for name, v := range map[string]any{
		"value":      c,
		"pointer":    &c,
		"generation": Generation{N: 1, Cred: c},
		"slice":      []Credential{c},
	} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if bytes.Contains(b, []byte(testSecret)) {
			t.Errorf("json of %s holds the password: %s", name, b)
		}
		if !bytes.Contains(b, []byte(c.Username)) {
			t.Errorf("json of %s lacks the username: %s", name, b)
		}
	}
}

func TestCredentialZapRedacts(t *testing.T) {
	c := secretCredential()
	core, logs := observer.New(zapcore.DebugLevel)
	logger, buf := bufferLogger()
	logger = zap.New(zapcore.NewTee(core, logger.Core()))
	logger.Debug("credential",
		zap.Any("any", c),
		zap.Any("anyptr", &c),
		zap.Object("object", c),
		zap.Stringer("stringer", c),
		zap.Reflect("reflect", c),
		zap.Any("generation", Generation{N: 1, Cred: c}),
		zap.Objects("objects", []Credential{c}),
	)
	logger.Sugar().Debugw("sugared", "cred", c)
	logger.Sugar().Debugf("formatted %v %+v", c, c)
	_ = logger.Sync()

	if out := buf.String(); strings.Contains(out, testSecret) || !strings.Contains(out, c.Username) {
		t.Errorf("zap JSON output leaks the password or lacks the username:\n%s", out)
	}
	// The observer keeps fields unencoded; encode them the way any sink would.
	for _, e := range logs.All() {
		if strings.Contains(e.Message, testSecret) {
			t.Errorf("message leaks the password: %s", e.Message)
		}
		for k, v := range e.ContextMap() {
			if s := fmt.Sprint(v); strings.Contains(s, testSecret) {
				t.Errorf("field %s leaks the password: %s", k, s)
			}
		}
	}
}

func TestCredentialSlogRedacts(t *testing.T) {
	c := secretCredential()
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	logger.Debug("credential", "cred", c, "ptr", &c)
	text := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	text.Info("credential", "cred", c)
	if out := buf.String(); strings.Contains(out, testSecret) || !strings.Contains(out, c.Username) {
		t.Errorf("slog output leaks the password or lacks the username:\n%s", out)
	}
}

func TestCredentialEqual(t *testing.T) {
	a := Credential{Username: "u", Password: "p", Version: "1"}
	for _, tc := range []struct {
		name string
		b    Credential
		want bool
	}{
		{"same", a, true},
		{"other version", Credential{Username: "u", Password: "p", Version: "2"}, true},
		{"other password", Credential{Username: "u", Password: "q", Version: "1"}, false},
		{"other user", Credential{Username: "v", Password: "p", Version: "1"}, false},
		{"prefix password", Credential{Username: "u", Password: "pp"}, false},
	} {
		if got := a.Equal(tc.b); got != tc.want {
			t.Errorf("%s: Equal = %v, want %v", tc.name, got, tc.want)
		}
	}
	if !(Credential{}).IsZero() || a.IsZero() {
		t.Error("IsZero is wrong")
	}
}
