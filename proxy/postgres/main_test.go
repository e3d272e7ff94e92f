package postgres_test

import (
	"fmt"
	"net/http"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/credswap/credswap/internal/testenv"
)

// TestMain runs the tests against a shared throwaway PostgreSQL and then
// checks that no goroutine outlived them: every proxy the tests started
// was shut down with its relay loops, sessions and background work.
func TestMain(m *testing.M) {
	code := testenv.Run(m)
	if code == 0 {
		http.DefaultClient.CloseIdleConnections()
		if err := goleak.Find(
			// lib/pq's Listener keeps a goroutine per closed listener briefly.
			goleak.IgnoreTopFunction("github.com/lib/pq.(*ListenerConn).listenerConnLoop"),
			goleak.IgnoreAnyFunction("github.com/lib/pq.(*Listener).listenerMain"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines leaked:", err)
			code = 1
		}
	}
	os.Exit(code)
}
