package creds

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"go.uber.org/zap/zapcore"
)

// redacted replaces the password wherever a Credential is printed.
const redacted = "[REDACTED]"

// Credential is a database login. The password never leaves the process
// through String, Format, JSON, zap or slog: all of them redact it. fmt
// bypasses Format in two cases, so avoid both: an unexported struct field of
// type Credential, and the %p verb with a non-pointer (which go vet flags).
type Credential struct {
	// Username is the database user.
	Username string
	// Password is the secret. Read it only to authenticate.
	Password string
	// Version identifies this credential at its source (a content digest
	// for files, a KV version or a lease id for Vault). It is not secret.
	Version string
	// Source is the kind of source it came from ("file", "env").
	Source string
	// Expiry is when the credential stops working; zero if it does not expire.
	Expiry time.Time
	// LeaseID is the Vault lease behind a dynamic credential, if any.
	LeaseID string
}

// Equal reports whether c and o are the same login. The password comparison
// runs in constant time.
func (c Credential) Equal(o Credential) bool {
	pw := subtle.ConstantTimeCompare([]byte(c.Password), []byte(o.Password)) == 1
	return pw && c.Username == o.Username
}

// IsZero reports whether c carries no username.
func (c Credential) IsZero() bool { return c.Username == "" }

// String describes c without its password.
func (c Credential) String() string {
	return fmt.Sprintf("Credential{username=%q version=%q source=%q password=%s}",
		c.Username, c.Version, c.Source, redacted)
}

// GoString is String: %#v must not print the password either.
func (c Credential) GoString() string { return c.String() }

// Format implements fmt.Formatter so that every verb, including %v, %+v,
// %#v, %s and %q, prints the redacted form.
func (c Credential) Format(f fmt.State, verb rune) {
	switch verb {
	case 'q':
		fmt.Fprintf(f, "%q", c.String())
	default:
		fmt.Fprint(f, c.String())
	}
}

// MarshalLogObject implements zapcore.ObjectMarshaler without the password.
func (c Credential) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("username", c.Username)
	if c.Version != "" {
		enc.AddString("version", c.Version)
	}
	enc.AddString("source", c.Source)
	if !c.Expiry.IsZero() {
		enc.AddTime("expiry", c.Expiry)
	}
	if c.LeaseID != "" {
		enc.AddString("lease_id", c.LeaseID)
	}
	enc.AddString("password", redacted)
	return nil
}

// LogValue implements slog.LogValuer without the password.
func (c Credential) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("username", c.Username)}
	if c.Version != "" {
		attrs = append(attrs, slog.String("version", c.Version))
	}
	attrs = append(attrs, slog.String("source", c.Source))
	if !c.Expiry.IsZero() {
		attrs = append(attrs, slog.Time("expiry", c.Expiry))
	}
	if c.LeaseID != "" {
		attrs = append(attrs, slog.String("lease_id", c.LeaseID))
	}
	attrs = append(attrs, slog.String("password", redacted))
	return slog.GroupValue(attrs...)
}

// MarshalJSON encodes c with the password redacted.
func (c Credential) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Username string    `json:"username"`
		Password string    `json:"password"`
		Version  string    `json:"version,omitempty"`
		Source   string    `json:"source,omitempty"`
		Expiry   time.Time `json:"expiry,omitzero"`
		LeaseID  string    `json:"lease_id,omitempty"`
	}{c.Username, redacted, c.Version, c.Source, c.Expiry, c.LeaseID})
}
