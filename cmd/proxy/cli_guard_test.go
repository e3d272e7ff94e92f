package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
)

// TestCLIWithoutToken runs the admin commands against an admin API without
// a token, which refuses POSTs without Content-Type: application/json or
// X-Credswap: the CLI's refresh, drain and rotate --wait go through.
func TestCLIWithoutToken(t *testing.T) {
	pg := testenv.PG(t)
	user, pass := pg.CreateUser(t, "cli")
	journal := filepath.Join(t.TempDir(), "rotation.json")
	p := proxytest.Start(t, pg, user, pass, func(c *config.Config) {
		c.Backends[0].Rotation = config.Rotation{
			Strategy: "single-user", // the user changes its own password
			Password: config.PasswordPolicy{Length: 24, Alphabet: "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"},
			Schedule: config.Schedule{Interval: config.Duration(time.Hour)},
			Publish:  config.Publish{To: "file"},
			Journal:  journal,
		}
		c.Backends[0].DrainDeadline = config.Duration(10 * time.Second)
	})
	p.Connect(t, "postgres")
	t.Setenv(tokenEnv, "")
	for _, args := range [][]string{
		{"status"}, {"refresh", "pg"}, {"drain", "pg"}, {"rotate", "pg", "--wait"}, {"status"},
	} {
		out, err := cli(t, append(args, "--admin", p.AdminURL)...)
		if err != nil {
			t.Fatalf("credswap %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		if args[0] == "rotate" && !strings.Contains(out, "succeeded: ") {
			t.Fatalf("credswap rotate --wait:\n%s", out)
		}
	}
	if got := p.Backend().Store.Current().N; got != 2 {
		t.Fatalf("after the CLI's rotation: generation %d, want 2", got)
	}
}
