package mysql

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/credswap/credswap/config"
)

// Client authentication plugins, as named in the configuration and on the
// wire.
const (
	AuthCachingSHA2 = gomysql.AUTH_CACHING_SHA2_PASSWORD
	AuthNative      = gomysql.AUTH_NATIVE_PASSWORD
)

// User is one local login. go-mysql's server hashes the plaintext on
// demand for the plugin the user authenticates with, so the password is
// kept; it never leaves the process and is never logged.
type User struct {
	Name   string
	Plugin string
	// password is the configured plaintext.
	password string
}

// Users is an immutable table of local logins; reload by building a new
// one and swapping it in (Handler.SetUsers).
type Users struct {
	byName map[string]*User
	// decoy answers for unknown users, so that a wrong user name and a
	// wrong password look the same to the client (1045 after a complete
	// exchange).
	decoy string
}

// LoadUsers builds the table from configuration, reading password files.
// Only password and password_file are usable: go-mysql verifies scrambles
// from the plaintext.
func LoadUsers(clients []config.Client) (*Users, error) {
	u := &Users{byName: make(map[string]*User, len(clients))}
	for i, c := range clients {
		user, err := newUser(c)
		if err != nil {
			return nil, fmt.Errorf("clients[%d] (%s): %w", i, c.User, err)
		}
		u.byName[c.User] = user
	}
	var pw [32]byte
	rand.Read(pw[:])
	u.decoy = hex.EncodeToString(pw[:])
	return u, nil
}

func newUser(c config.Client) (*User, error) {
	u := &User{Name: c.User}
	switch c.Auth {
	case "", AuthCachingSHA2:
		u.Plugin = AuthCachingSHA2
	case AuthNative:
		u.Plugin = AuthNative
	default:
		return nil, fmt.Errorf("auth %q is not a MySQL authentication plugin (use %s or %s)", c.Auth, AuthCachingSHA2, AuthNative)
	}
	switch {
	case c.PasswordFile != "":
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("reading password_file: %w", err)
		}
		u.password = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if u.password == "" {
			return nil, errors.New("password_file is empty")
		}
	case c.Password != "":
		u.password = c.Password
	default:
		return nil, errors.New("protocol mysql needs password or password_file (go-mysql verifies scrambles from the plaintext)")
	}
	return u, nil
}

// Lookup returns the user named name.
func (u *Users) Lookup(name string) (*User, bool) {
	user, ok := u.byName[name]
	return user, ok
}

// names returns every user name.
func (u *Users) names() []string {
	out := make([]string, 0, len(u.byName))
	for n := range u.byName {
		out = append(out, n)
	}
	return out
}

// credential is what go-mysql's server checks a login against: the user's
// password and plugin, or the decoy for an unknown user.
func (u *Users) credential(name string) (password, plugin string) {
	if user, ok := u.byName[name]; ok {
		return user.password, user.Plugin
	}
	return u.decoy, AuthCachingSHA2
}

// checkScramble verifies an authentication response computed from salt
// with the user's plugin (COM_CHANGE_USER, which go-mysql's server does not
// handle): mysql_native_password's SHA1 scramble or caching_sha2_password's
// SHA256 scramble (the fast path; the proxy holds the plaintext, so it
// never needs the full exchange). Comparisons are constant-time.
func (u *User) checkScramble(salt, resp []byte) bool {
	var want []byte
	switch u.Plugin {
	case AuthNative:
		want = gomysql.CalcNativePassword(salt, []byte(u.password))
	case AuthCachingSHA2:
		want = gomysql.CalcCachingSha2Password(salt, []byte(u.password))
	default:
		return false
	}
	return len(want) > 0 && subtle.ConstantTimeCompare(want, resp) == 1
}
