// Package decoy derives what the protocol front ends answer for a user
// name they do not know, so that it cannot be told from a configured one:
// values that are the same for a name at every attempt, differ between
// names, and cannot be predicted or linked to the configuration without
// a secret that never leaves the process.
//
// The secret is random, made on first use, and lives as long as the
// process: a configuration reload (LoadUsers runs again) keeps it, so a
// reload changes neither a decoy nor a salt derived from it; a restart
// replaces it.
package decoy

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"sync"
)

// key is the process's secret. It is package state on purpose: it must
// outlive every configuration, and nothing sets it but its first use.
var key = sync.OnceValue(func() []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return k
})

// Bytes returns n bytes derived from the process's secret, label and name:
// HMAC-SHA256(secret, counter || label || 0 || name) for counter 0, 1, …
// concatenated. Callers give each kind of value its own label (a label
// holds no NUL), so that no two kinds share bytes.
func Bytes(label, name string, n int) []byte {
	out := make([]byte, 0, n+sha256.Size)
	mac := hmac.New(sha256.New, key())
	var ctr [4]byte
	for i := uint32(0); len(out) < n; i++ {
		mac.Reset()
		binary.BigEndian.PutUint32(ctr[:], i)
		mac.Write(ctr[:])
		mac.Write([]byte(label))
		mac.Write([]byte{0})
		mac.Write([]byte(name))
		out = mac.Sum(out)
	}
	return out[:n]
}

// Pick returns a number in [0, n) derived from the process's secret, label
// and name, for choosing among n alternatives; n must be positive. Each
// alternative is as likely as any other (to within 2^-60 for any n a
// configuration has).
func Pick(label, name string, n int) int {
	return int(binary.BigEndian.Uint64(Bytes(label, name, 8)) % uint64(n))
}
