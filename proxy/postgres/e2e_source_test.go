package postgres_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
)

// twoUsers creates a database usable by two backend users.
func twoUsers(t *testing.T, pg *testenv.Postgres) (db, userA, passA, userB, passB string) {
	t.Helper()
	userA, passA = pg.CreateUser(t, "usera")
	userB, passB = pg.CreateUser(t, "userb")
	db = pg.CreateDatabase(t)
	pg.Exec(t, fmt.Sprintf("GRANT ALL ON DATABASE %s TO %s, %s", db, userA, userB))
	pg.ExecIn(t, db, fmt.Sprintf("GRANT ALL ON SCHEMA public TO %s, %s", userA, userB))
	return
}

func sessionUser(t *testing.T, p *proxytest.Proxy, db string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, p.PgxConfig(t, db))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer c.Close(ctx)
	var u string
	if err := c.QueryRow(ctx, "SELECT session_user").Scan(&u); err != nil {
		t.Fatal(err)
	}
	return u
}

func credJSON(user, pass string) []byte {
	b, _ := json.Marshal(map[string]string{"username": user, "password": pass})
	return b
}

func TestFileSourceChanges(t *testing.T) {
	pg := testenv.PG(t)
	db, userA, passA, userB, passB := twoUsers(t, pg)

	// Kubernetes layout: credential.json -> ..data/credential.json, ..data -> ..ts1.
	kdir := t.TempDir()
	writeK8s := func(ts string, body []byte) {
		os.MkdirAll(filepath.Join(kdir, ts), 0o755)
		os.WriteFile(filepath.Join(kdir, ts, "credential.json"), body, 0o600)
		tmp := filepath.Join(kdir, "..data_tmp")
		os.Remove(tmp)
		if err := os.Symlink(ts, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(kdir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	writeK8s("..2026_11_25_10_00_00.1", credJSON(userA, passA))
	os.Symlink("..data/credential.json", filepath.Join(kdir, "credential.json"))

	cases := []struct {
		name  string
		opt   proxytest.Option
		write func(p *proxytest.Proxy, body []byte)
	}{
		{"in-place write", nil, func(p *proxytest.Proxy, body []byte) {
			f, err := os.OpenFile(p.CredFile, os.O_WRONLY|os.O_TRUNC, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write(body)
			f.Close()
		}},
		{"atomic rename", nil, func(p *proxytest.Proxy, body []byte) {
			tmp := p.CredFile + ".new"
			os.WriteFile(tmp, body, 0o600)
			os.Rename(tmp, p.CredFile)
		}},
		{"kubernetes symlink swap", func(c *config.Config) {
			c.Backends[0].Credential.Path = filepath.Join(kdir, "credential.json")
		}, func(_ *proxytest.Proxy, body []byte) {
			writeK8s("..2026_11_25_10_05_00.2", body)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var opts []proxytest.Option
			if tc.opt != nil {
				opts = append(opts, tc.opt)
			}
			p := proxytest.Start(t, pg, userA, passA, opts...)
			if u := sessionUser(t, p, db); u != userA {
				t.Fatalf("before: session_user %s, want %s", u, userA)
			}
			start := time.Now()
			tc.write(p, credJSON(userB, passB))
			proxytest.Eventually(t, time.Second, "the new credential to be adopted", func() bool {
				cur := p.Backend().Store.Current()
				return cur != nil && cur.Cred.Username == userB
			})
			if u := sessionUser(t, p, db); u != userB {
				t.Fatalf("after %s: new connection uses %s, want %s", time.Since(start), u, userB)
			}
		})
	}
}

func TestFileSourceInvalidContent(t *testing.T) {
	pg := testenv.PG(t)
	db, userA, passA, _, _ := twoUsers(t, pg)
	p := proxytest.Start(t, pg, userA, passA)
	c := p.Connect(t, db)
	secretish := "not-json-" + proxytest.Random(6)
	if err := os.WriteFile(p.CredFile, []byte(secretish), 0o600); err != nil {
		t.Fatal(err)
	}
	var st struct {
		Backends []struct {
			Credential struct {
				Current   struct{ Generation uint64 }
				LastError string `json:"last_error"`
				Failing   bool
			}
		}
	}
	proxytest.Eventually(t, 2*time.Second, "/v1/status to report the bad file", func() bool {
		p.AdminDo(t, "GET", "/v1/status", &st)
		return st.Backends[0].Credential.Failing
	})
	cs := st.Backends[0].Credential
	if cs.Current.Generation != 1 || cs.LastError == "" || strings.Contains(cs.LastError, secretish) {
		t.Fatalf("status after bad file: %+v", cs)
	}
	var n int
	if err := c.QueryRow(context.Background(), "SELECT 1").Scan(&n); err != nil {
		t.Fatalf("live session after bad file: %v", err)
	}
	if u := sessionUser(t, p, db); u != userA {
		t.Fatalf("new sessions use %s", u)
	}
}

// TestBadInput sends malformed traffic while a healthy session keeps working.
func TestBadInput(t *testing.T) {
	p, db, _ := setup(t, func(c *config.Config) {
		c.Backends[0].Limits.MaxMessageSize = 64 << 10
		c.Backends[0].Limits.HandshakeTimeout = config.Duration(2 * time.Second)
	})
	healthy := p.Connect(t, db)
	ctx := context.Background()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			var n int
			if err := healthy.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
				errs <- err
				return
			}
		}
	}()
	addr := net.JoinHostPort(p.Host, itoa(p.Port))
	raw := func(payload []byte) (string, error) {
		conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return "", err
		}
		defer conn.Close()
		conn.Write(payload)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4096)
		var out []byte
		for {
			n, err := conn.Read(buf)
			out = append(out, buf[:n]...)
			if err != nil {
				return string(out), nil // closed: expected
			}
		}
	}
	// Garbage first bytes: closed without an answer.
	if out, err := raw([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil || out != "" {
		t.Errorf("garbage: %q %v", out, err)
	}
	// Oversized startup packet length.
	if out, err := raw([]byte{0x00, 0x10, 0x00, 0x00, 0, 3, 0, 0}); err != nil || out != "" {
		t.Errorf("oversized startup packet: %q %v", out, err)
	}
	// Disconnect mid-handshake: half a startup packet, then close.
	conn, _ := net.Dial("tcp", addr)
	conn.Write([]byte{0, 0, 0, 40, 0, 3})
	conn.Close()
	// Silent client: closed at the handshake timeout.
	silent, _ := net.Dial("tcp", addr)
	start := time.Now()
	silent.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err == nil || time.Since(start) > 5*time.Second {
		t.Errorf("silent client: %v after %s", err, time.Since(start))
	}
	silent.Close()

	// Oversized message after login: a clean protocol error.
	c := p.Connect(t, db)
	_, err := c.Exec(ctx, "SELECT $1::text", strings.Repeat("x", 100<<10))
	if err == nil || !strings.Contains(err.Error(), "max_message_size") {
		t.Errorf("oversized message: %v", err)
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("healthy session failed: %v", err)
	default:
	}
	var n int
	if err := healthy.QueryRow(ctx, "SELECT 2").Scan(&n); err != nil || n != 2 {
		t.Fatalf("healthy session after bad input: %v", err)
	}
}

// TestNoSecretsInLogs runs logins (good and bad), a credential change and
// a failed adoption at debug level and searches the log for passwords.
func TestNoSecretsInLogs(t *testing.T) {
	pg := testenv.PG(t)
	db, userA, passA, userB, passB := twoUsers(t, pg)
	p := proxytest.Start(t, pg, userA, passA)
	c := p.Connect(t, db)
	var n int
	c.QueryRow(context.Background(), "SELECT 1").Scan(&n)
	bad := *p
	bad.ClientPassword = "wrong-" + proxytest.Random(6)
	pgx.Connect(context.Background(), bad.ConnString(db))
	wrongBackend := "badpw-" + proxytest.Random(6)
	p.WriteCredential(t, userB, wrongBackend)
	proxytest.Eventually(t, 5*time.Second, "failed adoption", func() bool { return p.Backend().Store.Status().Failing })
	p.WriteCredential(t, userB, passB)
	proxytest.Eventually(t, 5*time.Second, "adoption", func() bool { return p.Backend().Store.Current().Cred.Username == userB })
	sessionUser(t, p, db)
	logs := p.Logs.String()
	for _, secret := range []string{passA, passB, wrongBackend, p.ClientPassword, bad.ClientPassword} {
		if strings.Contains(logs, secret) {
			t.Fatalf("a password appears in the log")
		}
	}
	if !strings.Contains(logs, userB) {
		t.Fatalf("log has no trace of the adoption:\n%s", p.Logs.Tail(20))
	}
}
