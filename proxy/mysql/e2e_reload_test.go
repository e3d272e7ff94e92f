package mysql_test

import (
	"context"
	"errors"
	"testing"

	"github.com/go-sql-driver/mysql"

	"github.com/credswap/credswap/config"
)

// TestReloadChangesLocalPasswords: after a reload with a new local
// password the old one is refused, although caching_sha2_password's fast
// path had cached it, and the new one is accepted.
func TestReloadChangesLocalPasswords(t *testing.T) {
	p, db, user := setup(t, withUsers)
	want := user + "@%"
	for range 2 { // full authentication, then the fast path from the cache
		if who, err := pingAs(dsnAs(p, "sha2a", "sha2a-secret", db, "")); err != nil || who != want {
			t.Fatalf("before the reload: %q %v", who, err)
		}
	}
	cfg := *p.Config
	b := cfg.Backends[0]
	b.Clients = append([]config.Client(nil), b.Clients...)
	for i := range b.Clients {
		if b.Clients[i].User == "sha2a" {
			b.Clients[i].Password = "sha2a-rotated"
		}
	}
	cfg.Backends = []config.Backend{b}
	if err := p.App.Reload(context.Background(), &cfg); err != nil {
		t.Fatal(err)
	}
	_, err := pingAs(dsnAs(p, "sha2a", "sha2a-secret", db, ""))
	var myErr *mysql.MySQLError
	if !errors.As(err, &myErr) || myErr.Number != 1045 {
		t.Fatalf("the old local password after the reload: want 1045, got %v", err)
	}
	for range 2 {
		if who, err := pingAs(dsnAs(p, "sha2a", "sha2a-rotated", db, "")); err != nil || who != want {
			t.Fatalf("the new local password: %q %v", who, err)
		}
	}
}
