package creds

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
)

// versioner derives Credential.Version for sources whose store has no
// version of its own (files, environment variables).
//
// The digest is keyed with a random per-source key, so the version changes
// whenever the username or password changes, yet it cannot be used to test
// password guesses offline: without the key, which never leaves the process,
// the digest says nothing about the password. The flip side is that two
// sources reading the same content report different versions.
type versioner struct {
	key [32]byte
}

func newVersioner() versioner {
	var v versioner
	// crypto/rand.Read never returns an error (Go 1.24+); it crashes the
	// program instead if the kernel has no randomness to give.
	_, _ = rand.Read(v.key[:])
	return v
}

// version returns 16 hex characters identifying username and password.
func (v *versioner) version(username, password string) string {
	m := hmac.New(sha256.New, v.key[:])
	m.Write([]byte(username))
	m.Write([]byte{0})
	m.Write([]byte(password))
	return hex.EncodeToString(m.Sum(nil)[:8])
}
