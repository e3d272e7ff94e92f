package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The state below is package-level on purpose: it is what ties servers to the lifetime of the test
// binary, which has exactly one TestMain. Nothing outside this file touches it.
var (
	// running holds every server started and not yet stopped, for Main to stop at the end.
	running struct {
		sync.Mutex
		servers map[stopper]struct{}
	}
	// mainActive is set while Main (or Run) runs the tests, so PG can refuse to start a server
	// nobody would stop.
	mainActive atomic.Bool
	// shared is the server of PG, started on first use.
	shared struct {
		once sync.Once
		pg   *Postgres
		err  error
	}
)

const sharedStartTimeout = 2 * time.Minute

// stopper is a server StopAll stops: *Postgres, *MariaDB or *Vault.
type stopper interface{ Stop() error }

func register(p stopper) {
	running.Lock()
	defer running.Unlock()
	if running.servers == nil {
		running.servers = make(map[stopper]struct{})
	}
	running.servers[p] = struct{}{}
}

func unregister(p stopper) {
	running.Lock()
	defer running.Unlock()
	delete(running.servers, p)
}

// Main runs the tests of m, then stops every server started by this test binary (including the
// one of [PG]) and exits with the tests' code. Call it from TestMain.
func Main(m *testing.M) { os.Exit(Run(m)) }

// Run is [Main] without the exit, for a TestMain that has more to do (such as goleak.Find) before
// it exits: it runs the tests of m, stops every server started by this test binary and returns
// the tests' exit code, or 1 if a server failed to stop cleanly.
func Run(m *testing.M) int {
	mainActive.Store(true)
	code := m.Run()
	mainActive.Store(false)
	if err := StopAll(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// StopAll stops every server started by this process and not yet stopped, in parallel.
func StopAll() error {
	running.Lock()
	servers := make([]stopper, 0, len(running.servers))
	for p := range running.servers {
		servers = append(servers, p)
	}
	running.Unlock()
	errs := make([]error, len(servers))
	var wg sync.WaitGroup
	for i, p := range servers {
		wg.Go(func() { errs[i] = p.Stop() })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// PG returns the PostgreSQL server shared by every test of this binary, started on first use.
// TestMain must call [Main]. If the PostgreSQL binaries are missing the test fails when CI is
// "true" and is skipped otherwise; a server that fails to start fails the test with the tail of
// its log. Tests must not stop or reconfigure the shared server: make databases and users with
// [Postgres.CreateDatabase] and [Postgres.CreateUser] instead.
func PG(t testing.TB) *Postgres {
	t.Helper()
	if !mainActive.Load() {
		t.Fatal("testenv.PG: TestMain must call testenv.Main(m) (or testenv.Run) so the shared server is stopped at the end")
	}
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), sharedStartTimeout)
		defer cancel()
		shared.pg, shared.err = StartPostgres(ctx, PostgresOptions{})
	})
	if shared.err != nil {
		skipOrFail(t, shared.err)
	}
	return shared.pg
}

// StartTestPostgres starts a private server with [StartPostgres] for a test that needs its own
// (for example with ExtraConfig), stopped at cleanup. Missing binaries skip or fail the test as in
// [PG].
func StartTestPostgres(t testing.TB, opts PostgresOptions) *Postgres {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), sharedStartTimeout)
	defer cancel()
	p, err := StartPostgres(ctx, opts)
	if err != nil {
		skipOrFail(t, err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Error(err)
		}
	})
	return p
}
