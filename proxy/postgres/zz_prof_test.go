package postgres_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/credswap/credswap/internal/testenv"
)

func TestProfAdhoc(t *testing.T) {
	p, db, _ := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	bench := p.PG.Bin("pgbench")
	testenv.Command(ctx, bench, p.Env(db), "-i", "-s", "1", "-q").CombinedOutput()
	c := os.Getenv("CLIENTS")
	out, _ := testenv.Command(ctx, bench, p.Env(db), "-S", "-n", "-c", c, "-j", "1", "-T", "10", "-M", "prepared").CombinedOutput()
	t.Log(lastLines(string(out), 3))
}
