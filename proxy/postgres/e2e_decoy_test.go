package postgres_test

import (
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/xdg-go/scram"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
	"github.com/credswap/credswap/proxy/postgres"
)

// pgLogin is what the proxy sent a raw frontend that logged in with a
// wrong password: the requests in order (AuthenticationSASL with its
// mechanisms, SASLContinue, MD5Password, CleartextPassword), the SCRAM
// salt and iteration count, and the ErrorResponse's body with the user
// name replaced by <user>.
type pgLogin struct {
	steps []string
	salt  []byte
	iters int
	err   []byte
}

// shape is the login without its salt: what a known user and a decoy
// imitating it must have in common.
func (l pgLogin) shape() string {
	return fmt.Sprintf("%s i=%d err=%q", strings.Join(l.steps, " > "), l.iters, l.err)
}

func (l pgLogin) String() string {
	return fmt.Sprintf("%s salt=%s", l.shape(), base64.StdEncoding.EncodeToString(l.salt))
}

// wrongLoginPG logs in to p as user with a wrong password, over TLS when
// tlsCfg is set, answering whatever the proxy asks with a real SCRAM
// client (xdg-go/scram) or the md5 or cleartext response, and records what
// the proxy sent.
func wrongLoginPG(t *testing.T, p *proxytest.Proxy, user string, tlsCfg *tls.Config) pgLogin {
	t.Helper()
	const password = "not-the-password"
	conn, err := proxytest.DialFresh(net.JoinHostPort(p.Host, strconv.Itoa(p.Port)), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	var rw io.ReadWriter = conn
	send := func(m pgproto3.FrontendMessage) {
		t.Helper()
		b, err := m.Encode(nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rw.Write(b); err != nil {
			t.Fatalf("%s: sending %T: %v", user, m, err)
		}
	}
	if tlsCfg != nil {
		send(&pgproto3.SSLRequest{})
		var answer [1]byte
		if _, err := io.ReadFull(conn, answer[:]); err != nil || answer[0] != 'S' {
			t.Fatalf("SSLRequest: %q %v", answer, err)
		}
		tc := tls.Client(conn, tlsCfg)
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		rw = tc
	}
	send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters: map[string]string{"user": user, "database": "postgres"}})

	var got pgLogin
	var conv *scram.ClientConversation
	for {
		var hdr [5]byte
		if _, err := io.ReadFull(rw, hdr[:]); err != nil {
			t.Fatalf("%s: after %v: %v", user, got.steps, err)
		}
		body := make([]byte, binary.BigEndian.Uint32(hdr[1:])-4)
		if _, err := io.ReadFull(rw, body); err != nil {
			t.Fatal(err)
		}
		switch {
		case hdr[0] == 'E':
			got.err = bytes.ReplaceAll(body, []byte(`"`+user+`"`), []byte(`"<user>"`))
			got.steps = append(got.steps, "ErrorResponse")
			return got
		case hdr[0] != 'R' || len(body) < 4:
			t.Fatalf("%s: unexpected message %q after %v", user, hdr[0], got.steps)
		}
		switch binary.BigEndian.Uint32(body) {
		case pgproto3.AuthTypeSASL:
			var m pgproto3.AuthenticationSASL
			if err := m.Decode(body); err != nil {
				t.Fatal(err)
			}
			got.steps = append(got.steps, "SASL "+strings.Join(m.AuthMechanisms, ","))
			c, err := scram.SHA256.NewClient("", password, "")
			if err != nil {
				t.Fatal(err)
			}
			conv = c.NewConversation()
			first, err := conv.Step("")
			if err != nil {
				t.Fatal(err)
			}
			send(&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte(first)})
		case pgproto3.AuthTypeSASLContinue:
			var m pgproto3.AuthenticationSASLContinue
			if err := m.Decode(body); err != nil {
				t.Fatal(err)
			}
			got.steps = append(got.steps, "SASLContinue")
			for _, attr := range strings.Split(string(m.Data), ",") {
				switch {
				case strings.HasPrefix(attr, "s="):
					got.salt, err = base64.StdEncoding.DecodeString(attr[2:])
				case strings.HasPrefix(attr, "i="):
					got.iters, err = strconv.Atoi(attr[2:])
				}
				if err != nil {
					t.Fatalf("server-first-message %q: %v", m.Data, err)
				}
			}
			final, err := conv.Step(string(m.Data))
			if err != nil {
				t.Fatal(err)
			}
			send(&pgproto3.SASLResponse{Data: []byte(final)})
		case pgproto3.AuthTypeMD5Password:
			var m pgproto3.AuthenticationMD5Password
			if err := m.Decode(body); err != nil {
				t.Fatal(err)
			}
			got.steps = append(got.steps, "MD5Password")
			inner := md5.Sum([]byte(password + user))
			outer := md5.Sum(append([]byte(hex.EncodeToString(inner[:])), m.Salt[:]...))
			send(&pgproto3.PasswordMessage{Password: "md5" + hex.EncodeToString(outer[:])})
		case pgproto3.AuthTypeCleartextPassword:
			got.steps = append(got.steps, "CleartextPassword")
			send(&pgproto3.PasswordMessage{Password: password})
		default:
			t.Fatalf("%s: authentication request %d after %v (a wrong password accepted?)", user, binary.BigEndian.Uint32(body), got.steps)
		}
	}
}

// reloadUsers swaps in a freshly loaded table of p's users, as a
// configuration reload does.
func reloadUsers(t *testing.T, p *proxytest.Proxy) {
	t.Helper()
	users, err := postgres.LoadUsers(p.Config.Backends[0].Clients)
	if err != nil {
		t.Fatal(err)
	}
	p.App.Handler("pg").(*postgres.Handler).SetUsers(users)
}

// TestUnknownUserLooksKnown: an unknown user gets the SCRAM exchange a
// configured user gets, with the same iteration count and a salt as long,
// the same at every attempt and different for another name, and fails
// with the same error, byte for byte but for the name. A reload keeps
// both the configured user's salt and the unknown user's.
func TestUnknownUserLooksKnown(t *testing.T) {
	p, _, _ := setup(t)
	known := wrongLoginPG(t, p, p.ClientUser, nil)
	if known.shape() != wrongLoginPG(t, p, p.ClientUser, nil).shape() || len(known.salt) != 16 || known.iters != 4096 {
		t.Fatalf("known user: %v", known)
	}
	ghost := wrongLoginPG(t, p, "ghost", nil)
	if ghost.shape() != known.shape() || len(ghost.salt) != len(known.salt) {
		t.Errorf("unknown user:\n got  %v\n want %v (but the salt)", ghost, known)
	}
	if again := wrongLoginPG(t, p, "ghost", nil); again.String() != ghost.String() {
		t.Errorf("unknown user, second attempt:\n got  %v\n want %v", again, ghost)
	}
	other := wrongLoginPG(t, p, "phantom", nil)
	if other.shape() != known.shape() || bytes.Equal(other.salt, ghost.salt) || bytes.Equal(ghost.salt, known.salt) {
		t.Errorf("two unknown users and a known one share a salt:\n ghost   %v\n phantom %v\n known   %v", ghost, other, known)
	}
	if !bytes.Contains(known.err, []byte("C28P01\x00")) {
		t.Errorf("known user's error: %q", known.err)
	}

	reloadUsers(t, p)
	for _, c := range []struct {
		user string
		want pgLogin
	}{{p.ClientUser, known}, {"ghost", ghost}} {
		if got := wrongLoginPG(t, p, c.user, nil); got.String() != c.want.String() {
			t.Errorf("%s after a reload:\n got  %v\n want %v", c.user, got, c.want)
		}
	}
}

// TestUnknownUserMD5Only: where every user uses md5, an unknown user gets
// an md5 challenge, as they do.
func TestUnknownUserMD5Only(t *testing.T) {
	hash := md5.Sum([]byte("hashed-secret" + "hashed"))
	p, _, _ := setup(t, func(c *config.Config) {
		c.Backends[0].Clients = []config.Client{
			{User: "md5user", Password: "md5-secret", Auth: "md5"},
			{User: "hashed", PasswordHash: "md5" + hex.EncodeToString(hash[:]), Auth: "md5"},
		}
	})
	want := wrongLoginPG(t, p, "md5user", nil)
	if want.shape() != wrongLoginPG(t, p, "hashed", nil).shape() || len(want.steps) != 2 || want.steps[0] != "MD5Password" {
		t.Fatalf("md5 users: %v", want)
	}
	for _, user := range []string{"ghost", "phantom", "ghost"} {
		if got := wrongLoginPG(t, p, user, nil); got.String() != want.String() {
			t.Errorf("unknown user %s:\n got  %v\n want %v", user, got, want)
		}
	}
}

// TestUnknownUserMixedMethods: with users of several methods and SCRAM
// iteration counts, each unknown name imitates one of them, the same one
// at every attempt and after a reload, and every kind of user is imitated
// by some name. A name imitating the cleartext user is refused on
// plaintext as that user is, and gets the cleartext request over TLS.
func TestUnknownUserMixedMethods(t *testing.T) {
	ca := testenv.TestCA(t)
	// A verifier with a count other than the proxy's own 4096.
	c, err := scram.SHA256.NewClient("", "slow-secret", "")
	if err != nil {
		t.Fatal(err)
	}
	salt := make([]byte, 16)
	rand.Read(salt)
	sc := c.GetStoredCredentials(scram.KeyFactors{Salt: string(salt), Iters: 10000})
	verifier := fmt.Sprintf("SCRAM-SHA-256$10000:%s$%s:%s", base64.StdEncoding.EncodeToString(salt),
		base64.StdEncoding.EncodeToString(sc.StoredKey), base64.StdEncoding.EncodeToString(sc.ServerKey))
	// withTLS adds md5user (md5) and clearuser (password) to app (SCRAM).
	p, _, _ := setup(t, withTLS(t, ca, false), func(c *config.Config) {
		c.Backends[0].Clients = append(c.Backends[0].Clients, config.Client{User: "slow", PasswordHash: verifier})
	})
	tlsCfg := ca.ClientTLSConfig("localhost")

	// What each configured user looks like, by shape.
	kinds := map[string]string{}
	for _, user := range []string{p.ClientUser, "md5user", "clearuser", "slow"} {
		kinds[wrongLoginPG(t, p, user, nil).shape()] = user
	}
	if len(kinds) != 4 {
		t.Fatalf("the configured users do not have four different shapes: %v", kinds)
	}

	const names = 64 // each kind is missed with probability (3/4)^64, about 1e-8
	seen := map[string]int{}
	logins := map[string]pgLogin{}
	for i := range names {
		name := "ghost" + strconv.Itoa(i)
		got := wrongLoginPG(t, p, name, nil)
		if again := wrongLoginPG(t, p, name, nil); again.String() != got.String() {
			t.Fatalf("%s, second attempt:\n got  %v\n want %v", name, again, got)
		}
		kind, ok := kinds[got.shape()]
		if !ok {
			t.Fatalf("%s looks like no configured user: %v", name, got)
		}
		seen[kind]++
		logins[name] = got
		if kind == "clearuser" && seen[kind] == 1 {
			// Over TLS the cleartext request, then the same error as
			// the configured user's.
			want := wrongLoginPG(t, p, "clearuser", tlsCfg)
			if got := wrongLoginPG(t, p, name, tlsCfg); got.String() != want.String() || want.steps[0] != "CleartextPassword" {
				t.Errorf("%s over TLS:\n got  %v\n want %v", name, got, want)
			}
		}
	}
	if len(seen) != len(kinds) {
		t.Errorf("unknown names imitated only %v", seen)
	}
	t.Logf("unknown names imitated: %v", seen)

	reloadUsers(t, p)
	for i := range 8 {
		name := "ghost" + strconv.Itoa(i)
		if got := wrongLoginPG(t, p, name, nil); got.String() != logins[name].String() {
			t.Errorf("%s after a reload:\n got  %v\n want %v", name, got, logins[name])
		}
	}
}
