package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"

	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
)

// syncBuffer is a bytes.Buffer safe for the process's output goroutines
// and the test reading it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestAuthFailuresAreNotSampled runs the real command with its production
// (JSON, sampled) logger and makes 300 failed client logins on a
// PostgreSQL and 300 on a MySQL listener, as fast as two cores allow: each
// one is logged, none is sampled away (zap's sampling alone keeps about
// 100 a second).
func TestAuthFailuresAreNotSampled(t *testing.T) {
	const n = 300
	pg := testenv.PG(t)
	maria := testenv.MariaDBServer(t)
	pgUser, pgPass := pg.CreateUser(t, "alog")
	myUser, myPass := maria.CreateUser(t, "alog")
	dir := t.TempDir()
	write := func(name string, v any) {
		b, _ := json.Marshal(v)
		os.WriteFile(filepath.Join(dir, name), b, 0o600)
	}
	write("pg.json", map[string]string{"username": pgUser, "password": pgPass})
	write("my.json", map[string]string{"username": myUser, "password": myPass})
	os.WriteFile(filepath.Join(dir, "pw"), []byte("local-right\n"), 0o600)
	pgPort, _ := testenv.FreePort()
	myPort, _ := testenv.FreePort()
	adminPort, _ := testenv.FreePort()
	cfg := fmt.Sprintf(`admin: {listen: 127.0.0.1:%d}
log: {level: info, format: json}
backends:
  - name: pg
    protocol: postgres
    listen: 127.0.0.1:%d
    upstream: %s
    clients: [{user: app, password_file: pw}]
    credential: {source: file, path: pg.json}
  - name: my
    protocol: mysql
    listen: 127.0.0.1:%d
    upstream: %s
    clients: [{user: app, password_file: pw, auth: mysql_native_password}]
    credential: {source: file, path: my.json}
`, adminPort, pgPort, pg.Addr(), myPort, maria.Addr())
	path := filepath.Join(dir, "credswap.yaml")
	os.WriteFile(path, []byte(cfg), 0o600)

	cmd := exec.Command(os.Args[0], "run", "--config", path)
	cmd.Env = append(os.Environ(), "CREDSWAP_TEST_RUN_MAIN=1")
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("proxy output (tail):\n%s", tail(logs.String(), 40))
		}
	}()
	ctx := context.Background()
	pgDSN := func(pw string) string {
		return fmt.Sprintf("host=127.0.0.1 port=%d user=app password=%s dbname=postgres sslmode=disable", pgPort, pw)
	}
	myDSN := func(pw string) string { return fmt.Sprintf("app:%s@tcp(127.0.0.1:%d)/", pw, myPort) }
	proxytest.Eventually(t, 15*time.Second, "the proxy to accept", func() bool {
		c, err := pgx.Connect(ctx, pgDSN("local-right"))
		if err != nil {
			return false
		}
		c.Close(ctx)
		return true
	})

	wrong := "wrong-" + proxytest.Random(6)
	attempt := map[string]func() error{
		"pg": func() error {
			c, err := pgx.Connect(ctx, pgDSN(wrong))
			if err == nil {
				c.Close(ctx)
			}
			return err
		},
		"my": func() error {
			db, err := sql.Open("mysql", myDSN(wrong))
			if err != nil {
				return err
			}
			defer db.Close()
			return db.PingContext(ctx)
		},
	}
	start := time.Now()
	var wg sync.WaitGroup
	for backend, login := range attempt {
		jobs := make(chan struct{}, n)
		for range n {
			jobs <- struct{}{}
		}
		close(jobs)
		for range 8 {
			wg.Go(func() {
				for range jobs {
					if err := login(); err == nil {
						t.Errorf("%s: a wrong password logged in", backend)
					}
				}
			})
		}
	}
	wg.Wait()
	t.Logf("%d failed logins on each backend in %s", n, time.Since(start).Round(time.Millisecond))

	count := func() map[string]int {
		got := map[string]int{}
		sc := bufio.NewScanner(strings.NewReader(logs.String()))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var e struct {
				Msg, Code, Backend string
				Audit              bool
			}
			if json.Unmarshal(sc.Bytes(), &e) == nil && e.Msg == "client refused" && e.Code == "client_auth_failed" && e.Audit {
				got[e.Backend]++
			}
		}
		return got
	}
	// The lines are written when the logins fail; wait for stragglers
	// still in the proxy's goroutines, then compare.
	got := count()
	for deadline := time.Now().Add(5 * time.Second); (got["pg"] < n || got["my"] < n) && time.Now().Before(deadline); got = count() {
		time.Sleep(50 * time.Millisecond)
	}
	if got["pg"] != n || got["my"] != n {
		t.Fatalf("log lines of failed logins: %v, want %d each", got, n)
	}
	if strings.Contains(logs.String(), wrong) || strings.Contains(logs.String(), "local-right") {
		t.Fatal("a client password appears in the log")
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
