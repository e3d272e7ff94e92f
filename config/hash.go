package config

import (
	"encoding/base64"
	"strconv"
	"strings"
)

// hashKind is the kind of a client password_hash.
type hashKind int

const (
	hashInvalid hashKind = iota
	hashSCRAM            // SCRAM-SHA-256 verifier; answers auth scram-sha-256
	hashMD5              // "md5" + md5(password || user); answers auth md5
)

// scramPrefix starts a PostgreSQL SCRAM-SHA-256 verifier.
const scramPrefix = "SCRAM-SHA-256$"

// checkPasswordHash classifies h as a PostgreSQL password verifier, in the
// formats of pg_authid.rolpassword
// (https://www.postgresql.org/docs/current/catalog-pg-authid.html), and
// says what is wrong with it otherwise. The problem never quotes h.
func checkPasswordHash(h string) (hashKind, string) {
	if rest, ok := strings.CutPrefix(h, scramPrefix); ok {
		if p := checkSCRAM(rest); p != "" {
			return hashInvalid, p
		}
		return hashSCRAM, ""
	}
	if hex, ok := strings.CutPrefix(h, "md5"); ok && isLowerHex(hex, 32) {
		return hashMD5, ""
	}
	return hashInvalid, `must be a SCRAM-SHA-256 verifier ("SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>") or "md5" followed by 32 lowercase hex digits`
}

// checkSCRAM checks the part of a SCRAM-SHA-256 verifier after its prefix:
// "<iterations>:<salt>$<StoredKey>:<ServerKey>" with the salt and keys in
// standard base64 and each key a 32-byte SHA-256 value (RFC 5803).
func checkSCRAM(rest string) string {
	iterSalt, keys, ok1 := strings.Cut(rest, "$")
	iter, salt, ok2 := strings.Cut(iterSalt, ":")
	stored, server, ok3 := strings.Cut(keys, ":")
	if !ok1 || !ok2 || !ok3 {
		return `SCRAM-SHA-256 verifier must look like "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>"`
	}
	if n, err := strconv.Atoi(iter); err != nil || n <= 0 {
		return "SCRAM-SHA-256 verifier: iteration count must be a positive integer"
	}
	if b, err := base64.StdEncoding.DecodeString(salt); err != nil || len(b) == 0 {
		return "SCRAM-SHA-256 verifier: salt must be non-empty base64"
	}
	for _, k := range []struct{ name, b64 string }{{"StoredKey", stored}, {"ServerKey", server}} {
		if b, err := base64.StdEncoding.DecodeString(k.b64); err != nil || len(b) != 32 {
			return "SCRAM-SHA-256 verifier: " + k.name + " must be 32 bytes in base64"
		}
	}
	return ""
}

// isLowerHex reports whether s is exactly n lowercase hex digits.
func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
