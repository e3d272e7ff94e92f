package mysql

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/proxy/internal/decoy"
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
	// models are the users sorted by name: an unknown user imitates one
	// of them (credential).
	models []*User
}

// Labels of the values derived from the process's secret (package decoy).
const (
	// labelModel picks the configured user an unknown name imitates.
	labelModel = "mysql decoy model"
	// labelPassword derives an unknown name's decoy password.
	labelPassword = "mysql decoy password"
)

// minDecoyPassword is the shortest decoy password, in bytes (128 bits):
// go-mysql logs in whoever sends a decoy's password, so it must not be
// guessable. A decoy password has the length of the imitated user's when
// that is longer, and so costs the same to check: caching_sha2_password's
// hash (SHA-crypt, 5000 rounds, computed twice per attempt) takes as many
// SHA-256 blocks for every password of 12 to 23 bytes. Only a user whose
// password is shorter than 12 bytes is imitated by a decoy that costs
// more (about 17%, a fraction of a millisecond).
const minDecoyPassword = 16

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
	for _, user := range u.byName {
		u.models = append(u.models, user)
	}
	slices.SortFunc(u.models, func(a, b *User) int { return strings.Compare(a.Name, b.Name) })
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
// password and plugin, or for an unknown name a decoy that runs the same
// exchange and fails as a wrong password does (1045 after the same
// packets). The decoy imitates a configured user picked from the name (so
// plugins appear in the proportions the configuration has them): its
// plugin, and a password of random bytes as long as its password (at
// least minDecoyPassword), derived from the name and the process's
// secret. Both are the same at every attempt; a reload changes them only
// if the users they were picked from changed. go-mysql's
// caching_sha2_password cache never holds a decoy (nobody logs in with
// one), so an unknown name always gets full authentication, as a known
// user does with a wrong password, cached or not. The decoy is made for
// every name, known or not, so that both cost the same.
func (u *Users) credential(name string) (password, plugin string) {
	plugin, n := AuthCachingSHA2, minDecoyPassword
	if len(u.models) > 0 {
		model := u.models[decoy.Pick(labelModel, name, len(u.models))]
		plugin, n = model.Plugin, max(len(model.password), minDecoyPassword)
	}
	password = string(decoy.Bytes(labelPassword, name, n))
	if user, ok := u.byName[name]; ok {
		return user.password, user.Plugin
	}
	return password, plugin
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
