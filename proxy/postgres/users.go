package postgres

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/xdg-go/scram"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/proxy/internal/decoy"
)

// Client authentication methods, as named in the configuration.
const (
	AuthSCRAM    = "scram-sha-256"
	AuthMD5      = "md5"
	AuthPassword = "password"
)

// scramIterations is the iteration count for verifiers the proxy derives
// from plaintext passwords; PostgreSQL's default.
const scramIterations = 4096

// scramSaltLen is the salt length of verifiers the proxy derives from
// plaintext passwords; PostgreSQL's (SCRAM_DEFAULT_SALT_LEN).
const scramSaltLen = 16

// Labels of the values derived from the process's secret (package decoy).
const (
	// labelSalt derives the SCRAM salt of a user name, configured with a
	// plaintext password or unknown alike: a name's salt stays the same
	// across reloads, and when the name is added to or removed from the
	// configuration.
	labelSalt = "postgres scram salt"
	// labelModel picks the configured user an unknown name imitates.
	labelModel = "postgres decoy model"
)

// User is one local login. It holds what each allowed method needs and
// never the backend credential.
type User struct {
	Name   string
	Method string
	// scram is the SCRAM verifier (from a password or a configured hash).
	scram *scram.StoredCredentials
	// md5 is hex(md5(password || user)) when known.
	md5 string
	// password is the plaintext when configured as such.
	password []byte
}

// Users is an immutable table of local logins; reload by building a new
// one and swapping it in.
type Users struct {
	byName map[string]*User
	// models are the users sorted by name: an unknown user imitates one
	// of them (decoy).
	models []*User
}

// LoadUsers builds the table from configuration, reading password files.
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
	u := &User{Name: c.User, Method: c.Auth}
	if u.Method == "" {
		u.Method = AuthSCRAM
	}
	password := c.Password
	if c.PasswordFile != "" {
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("reading password_file: %w", err)
		}
		password = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if password == "" {
			return nil, errors.New("password_file is empty")
		}
	}
	switch {
	case password != "":
		u.password = []byte(password)
		sc, err := scramFromPassword(c.User, password)
		if err != nil {
			return nil, err
		}
		u.scram = sc
		sum := md5.Sum([]byte(password + c.User))
		u.md5 = hex.EncodeToString(sum[:])
	case strings.HasPrefix(c.PasswordHash, "SCRAM-SHA-256$"):
		sc, err := parseSCRAMVerifier(c.PasswordHash)
		if err != nil {
			return nil, err
		}
		u.scram = sc
	case strings.HasPrefix(c.PasswordHash, "md5") && len(c.PasswordHash) == 35:
		u.md5 = c.PasswordHash[3:]
	default:
		return nil, errors.New("no usable password or password_hash")
	}
	switch u.Method {
	case AuthSCRAM, AuthPassword:
		if u.scram == nil && u.password == nil && u.md5 == "" {
			return nil, fmt.Errorf("auth %s needs a password or a SCRAM verifier", u.Method)
		}
		if u.Method == AuthSCRAM && u.scram == nil {
			return nil, errors.New("auth scram-sha-256 needs a password or a SCRAM verifier")
		}
	case AuthMD5:
		if u.md5 == "" {
			return nil, errors.New("auth md5 needs a password or an md5 hash")
		}
	default:
		return nil, fmt.Errorf("unknown auth method %q", u.Method)
	}
	return u, nil
}

// Lookup returns the user named name.
func (u *Users) Lookup(name string) (*User, bool) {
	user, ok := u.byName[name]
	return user, ok
}

// decoy returns the stand-in for name, a user that is not configured, so
// that its login runs and fails like a configured user's with a wrong
// password. It imitates a configured user picked from the name (so
// methods and iteration counts appear in the proportions the
// configuration has them): same method, same kind of secret, same
// iteration count and salt length, with the salt name would have if it
// were configured with a password, and secrets nobody knows, drawn anew
// at each attempt. It costs what the imitated user's login costs: a SCRAM
// exchange checks the proof against a StoredKey (no PBKDF2, as for
// configured users), a cleartext password is compared or hashed as the
// imitated user's is. Method, iterations and salt are the same at every
// attempt; a reload changes the method and iterations only if the users
// they were picked from changed.
func (u *Users) decoy(name string) *User {
	model := &User{Method: AuthSCRAM, scram: &scram.StoredCredentials{ // no users: a default SCRAM user
		KeyFactors: scram.KeyFactors{Salt: string(make([]byte, scramSaltLen)), Iters: scramIterations},
		StoredKey:  make([]byte, 32),
		ServerKey:  make([]byte, 32),
	}}
	if len(u.models) > 0 {
		model = u.models[decoy.Pick(labelModel, name, len(u.models))]
	}
	d := &User{Name: name, Method: model.Method}
	if model.scram != nil {
		d.scram = &scram.StoredCredentials{
			KeyFactors: scram.KeyFactors{
				Salt:  string(decoy.Bytes(labelSalt, name, len(model.scram.Salt))),
				Iters: model.scram.Iters,
			},
			StoredKey: randomBytes(len(model.scram.StoredKey)),
			ServerKey: randomBytes(len(model.scram.ServerKey)),
		}
	}
	if model.md5 != "" {
		d.md5 = hex.EncodeToString(randomBytes(md5.Size))
	}
	if model.password != nil {
		d.password = randomBytes(len(model.password))
	}
	return d
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// scramFromPassword derives user's SCRAM verifier from password, salted
// with the user name's salt (labelSalt): the same at every reload of the
// same password, unknown before the process starts.
func scramFromPassword(user, password string) (*scram.StoredCredentials, error) {
	salt := decoy.Bytes(labelSalt, user, scramSaltLen)
	c, err := scram.SHA256.NewClient("", password, "")
	if err != nil {
		return nil, fmt.Errorf("preparing SCRAM verifier: %w", err)
	}
	sc, err := c.GetStoredCredentialsWithError(scram.KeyFactors{Salt: string(salt), Iters: scramIterations})
	if err != nil {
		return nil, fmt.Errorf("preparing SCRAM verifier: %w", err)
	}
	return &sc, nil
}

// parseSCRAMVerifier reads a PostgreSQL verifier as stored in
// pg_authid.rolpassword: SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>.
func parseSCRAMVerifier(v string) (*scram.StoredCredentials, error) {
	bad := errors.New("password_hash is not a valid SCRAM-SHA-256 verifier")
	rest, ok := strings.CutPrefix(v, "SCRAM-SHA-256$")
	if !ok {
		return nil, bad
	}
	params, keys, ok := strings.Cut(rest, "$")
	if !ok {
		return nil, bad
	}
	iterStr, saltB64, ok := strings.Cut(params, ":")
	if !ok {
		return nil, bad
	}
	storedB64, serverB64, ok := strings.Cut(keys, ":")
	if !ok {
		return nil, bad
	}
	iters, err := strconv.Atoi(iterStr)
	if err != nil || iters <= 0 {
		return nil, bad
	}
	salt, err1 := base64.StdEncoding.DecodeString(saltB64)
	stored, err2 := base64.StdEncoding.DecodeString(storedB64)
	server, err3 := base64.StdEncoding.DecodeString(serverB64)
	if err1 != nil || err2 != nil || err3 != nil || len(stored) != 32 || len(server) != 32 {
		return nil, bad
	}
	return &scram.StoredCredentials{
		KeyFactors: scram.KeyFactors{Salt: string(salt), Iters: iters},
		StoredKey:  stored,
		ServerKey:  server,
	}, nil
}

// checkPassword compares a cleartext password with what is known about the
// user, in constant time where the comparison involves secrets.
func (u *User) checkPassword(pw []byte) bool {
	switch {
	case u.password != nil:
		return subtle.ConstantTimeCompare(pw, u.password) == 1
	case u.scram != nil:
		c, err := scram.SHA256.NewClient("", string(pw), "")
		if err != nil {
			return false
		}
		sc, err := c.GetStoredCredentialsWithError(u.scram.KeyFactors)
		if err != nil {
			return false
		}
		return subtle.ConstantTimeCompare(sc.StoredKey, u.scram.StoredKey) == 1
	case u.md5 != "":
		sum := md5.Sum(append(pw, u.Name...))
		return subtle.ConstantTimeCompare([]byte(hex.EncodeToString(sum[:])), []byte(u.md5)) == 1
	}
	return false
}
