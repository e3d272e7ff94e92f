package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const (
	// vaultDirPrefix names the temp dir of every Vault server, so leftovers can be found and removed.
	vaultDirPrefix = "credswap-vault-"
	// vaultPidFile in that dir holds the pid of the Vault server, next to ownerFile.
	vaultPidFile = "vault.pid"

	vaultReadyTimeout = 60 * time.Second // from exec to an answering /v1/sys/health
	vaultStopTimeout  = 10 * time.Second // SIGTERM before SIGKILL
	vaultHTTPTimeout  = 30 * time.Second // per request of the helpers; a paused server times out
)

// VaultOptions tunes a Vault server; the zero value is the default.
type VaultOptions struct {
	// Binary is the Vault server program; "" builds (or reuses) the one pinned by tools/vault
	// with [BuildVault].
	Binary string
	// LogLevel is the server's -log-level ("trace", "debug", "info", ...); "" means "info".
	LogLevel string
}

// Vault is a running throwaway HashiCorp Vault server in dev mode: in memory, unsealed, with a
// KV v2 engine at "secret/" and a root token. Everything it holds is lost when it stops. Its
// fields are set by StartVault and never change; its methods are safe for concurrent use.
type Vault struct {
	Addr    string // "http://127.0.0.1:port", the API address (no TLS)
	Token   string // the root token, random per server
	Port    int    // the API port; the cluster listener takes Port+1
	Binary  string // the vault program that runs the server
	Dir     string // temp dir: the server's HOME and log; removed by Stop
	LogFile string // the server's stdout and stderr, inside Dir

	client *http.Client // no proxy from the environment; per-request timeout vaultHTTPTimeout

	proc    *os.Process   // the server, leader of its own process group; nil when not running
	done    chan struct{} // closed once the server has exited and waitErr is set
	waitErr error         // the server's exit status; read only after done is closed
	logOff  int64         // offset in LogFile where the current start attempt began

	paused    atomic.Bool  // between Pause and Resume
	stopped   atomic.Bool  // set when Stop begins
	stop      func() error // sync.OnceValue of shutdown
	setupMu   sync.Mutex   // guards setupDone
	setupDone bool         // the test policy and the approle auth mount exist (see ensureTestAuth)
}

// StartVault starts `vault server -dev` on a free loopback port with a random root token and
// waits until GET /v1/sys/health answers 200 and the root token works (at most 60 s).
//
// The server runs in a temp dir that is its HOME, with an environment of PATH and HOME only
// (nothing VAULT_* is inherited), in its own process group, with its output in LogFile. ctx
// bounds the start, including a build of the binary when opts.Binary is "": the server runs until
// [Vault.Stop] (or [Main]) stops it. Start failures carry the tail of the server log. On Linux the
// kernel kills the server (SIGKILL, which also works on a paused one) if the test binary dies
// without stopping it.
func StartVault(ctx context.Context, opts VaultOptions) (*Vault, error) {
	bin := opts.Binary
	if bin == "" {
		var err error
		if bin, err = BuildVault(ctx); err != nil {
			return nil, err
		}
	}
	root := os.TempDir()
	removeVaultLeftovers(root)
	dir, err := os.MkdirTemp(root, vaultDirPrefix)
	if err != nil {
		return nil, fmt.Errorf("testenv: create vault dir: %w", err)
	}
	v := &Vault{
		Binary:  bin,
		Dir:     dir,
		LogFile: filepath.Join(dir, "vault.log"),
		client: &http.Client{
			Transport: &http.Transport{
				Proxy:               nil, // never an HTTP(S)_PROXY from the environment
				DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
				MaxIdleConnsPerHost: 16,
				IdleConnTimeout:     30 * time.Second,
			},
			Timeout: vaultHTTPTimeout,
		},
	}
	v.stop = sync.OnceValue(v.shutdown)
	if err := v.setup(ctx, opts); err != nil {
		return nil, errors.Join(err, v.Stop())
	}
	registerVault(v)
	return v, nil
}

// setup writes the owner file and starts the server, retrying with new ports when another process
// took one of the chosen ones.
func (v *Vault) setup(ctx context.Context, opts VaultOptions) error {
	if err := os.WriteFile(filepath.Join(v.Dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	if err := os.Mkdir(filepath.Join(v.Dir, "home"), 0o700); err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	token, err := randomHex(16)
	if err != nil {
		return err
	}
	v.Token = "root-" + token
	logLevel := opts.LogLevel
	if logLevel == "" {
		logLevel = "info"
	}
	for attempt := 1; ; attempt++ {
		if v.Port, err = freePortPair(); err != nil {
			return err
		}
		v.Addr = "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(v.Port))
		err := v.start(ctx, logLevel)
		if err == nil || attempt == startAttempts || !v.lostPortRace() {
			return err
		}
	}
}

// freePortPair returns a port p on 127.0.0.1 such that p and p+1 were free a moment ago: a dev
// server listens on -dev-listen-address and puts its cluster listener on the next port.
func freePortPair() (int, error) {
	var lastErr error
	for range 20 {
		p, err := FreePort()
		if err != nil {
			return 0, err
		}
		if p >= 65535 {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+1)))
		if err != nil {
			lastErr = err
			continue
		}
		if err := ln.Close(); err != nil {
			return 0, fmt.Errorf("testenv: find free port pair: %w", err)
		}
		return p, nil
	}
	return 0, fmt.Errorf("testenv: no two adjacent free ports on 127.0.0.1 in 20 tries (last: %v)", lastErr)
}

// start launches the server and waits until it is ready.
func (v *Vault) start(ctx context.Context, logLevel string) error {
	logf, err := os.OpenFile(v.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("testenv: open vault log: %w", err)
	}
	if fi, err := logf.Stat(); err == nil {
		v.logOff = fi.Size()
	}
	cmd := exec.Command(v.Binary, "server", "-dev",
		"-dev-root-token-id="+v.Token,
		"-dev-listen-address="+net.JoinHostPort("127.0.0.1", strconv.Itoa(v.Port)),
		"-dev-no-store-token",
		"-log-level="+logLevel,
	)
	cmd.Dir = v.Dir
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + filepath.Join(v.Dir, "home"),
	}
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Its own process group: a Ctrl-C aimed at the test binary's group does not reach it, and
	// Stop, Pause and Resume signal the whole group (plugins included).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	setVaultDeathSignal(cmd.SysProcAttr)

	proc, done, err := startServer(cmd, logf, &v.waitErr)
	if err != nil {
		return fmt.Errorf("testenv: start vault: %w", err)
	}
	v.proc, v.done = proc, done
	_ = os.WriteFile(filepath.Join(v.Dir, vaultPidFile), []byte(strconv.Itoa(v.proc.Pid)), 0o644)
	if err := v.waitReady(ctx); err != nil {
		err = errors.Join(err, v.terminate())
		v.proc, v.done = nil, nil
		return err
	}
	return nil
}

// waitReady polls GET /v1/sys/health until it answers 200, then checks that the root token is
// ours (another server that won the port would not know it), until 60 s pass, ctx ends or the
// server exits.
func (v *Vault) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, vaultReadyTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		attemptCtx, cancelAttempt := context.WithTimeout(ctx, 2*time.Second)
		err := v.Health(attemptCtx)
		if err == nil {
			err = v.Call(attemptCtx, v.Token, http.MethodGet, "auth/token/lookup-self", nil, nil)
		}
		cancelAttempt()
		if err == nil {
			return nil
		}
		select {
		case <-v.done:
			return fmt.Errorf("testenv: vault exited during start (%v); log:\n%s", v.waitErr, v.LogTail())
		case <-ctx.Done():
			return fmt.Errorf("testenv: vault not ready on %s: %w (last attempt: %v); log:\n%s",
				v.Addr, context.Cause(ctx), err, v.LogTail())
		case <-tick.C:
		}
	}
}

// Health sends GET /v1/sys/health and returns nil when it answers 200 (initialized, unsealed,
// active). A paused server makes it wait until ctx ends.
func (v *Vault) Health(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.Addr+"/v1/sys/health", nil)
	if err != nil {
		return fmt.Errorf("testenv: vault health: %w", err)
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return fmt.Errorf("testenv: vault health: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("testenv: vault health: %s", resp.Status)
	}
	return nil
}

// lostPortRace reports whether the last start failed because one of its ports was taken.
func (v *Vault) lostPortRace() bool {
	return strings.Contains(v.LogTail(), "address already in use")
}

// LogTail returns the last lines of the server log written since the latest start attempt.
func (v *Vault) LogTail() string {
	return logTail(v.LogFile, v.logOff)
}

// Pause stops the server's process group with SIGSTOP, so it keeps its state but answers nothing:
// connections still open (the kernel accepts them) and requests hang until their deadline, as
// with a Vault that is unreachable. On Linux it returns once every thread of the server has
// stopped, so no request sent after it is answered before [Vault.Resume]. Never pause the shared
// [VaultServer]; use [StartTestVault].
func (v *Vault) Pause() error {
	if err := v.signalGroup(syscall.SIGSTOP, true); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := waitStopped(ctx, v.proc.Pid); err != nil {
		return fmt.Errorf("testenv: pause vault on %s: %w", v.Addr, err)
	}
	return nil
}

// Resume continues a server stopped by [Vault.Pause] with SIGCONT; requests sent meanwhile are
// then answered.
func (v *Vault) Resume() error { return v.signalGroup(syscall.SIGCONT, false) }

func (v *Vault) signalGroup(sig syscall.Signal, pause bool) error {
	if v.stopped.Load() || v.proc == nil {
		return fmt.Errorf("testenv: vault on %s: %v after Stop", v.Addr, sig)
	}
	select {
	case <-v.done:
		return fmt.Errorf("testenv: vault on %s has exited (%v); log:\n%s", v.Addr, v.waitErr, v.LogTail())
	default:
	}
	if err := syscall.Kill(-v.proc.Pid, sig); err != nil {
		return fmt.Errorf("testenv: vault on %s: %v: %w", v.Addr, sig, err)
	}
	v.paused.Store(pause)
	return nil
}

// reachable reports whether helpers may talk to the server: neither stopped nor paused. Cleanups
// check it so that they neither hang on a paused server nor fail on a stopped one.
func (v *Vault) reachable() bool { return !v.stopped.Load() && !v.paused.Load() }

// Stop shuts the server down (SIGTERM to its process group, continued if paused; SIGKILL after
// 10 s) and removes its directory. It is idempotent; later calls return the first result. It
// reports an error when the server had to be killed or had exited on its own before Stop.
func (v *Vault) Stop() error { return v.stop() }

func (v *Vault) shutdown() error {
	v.stopped.Store(true)
	unregisterVault(v)
	var errs []error
	if v.done != nil {
		select {
		case <-v.done:
			errs = append(errs, fmt.Errorf("testenv: vault on %s had exited before Stop (%v); log:\n%s", v.Addr, v.waitErr, v.LogTail()))
		default:
			errs = append(errs, v.terminate())
		}
	}
	v.client.CloseIdleConnections()
	if err := os.RemoveAll(v.Dir); err != nil {
		errs = append(errs, fmt.Errorf("testenv: remove vault dir: %w", err))
	}
	return errors.Join(errs...)
}

// terminate sends the process group SIGTERM (and SIGCONT, in case it is paused), kills it after
// vaultStopTimeout and waits for the server to exit; then it kills whatever is left in the group.
func (v *Vault) terminate() error {
	if v.proc == nil {
		return nil
	}
	pgid := v.proc.Pid
	var err error
	if kerr := syscall.Kill(-pgid, syscall.SIGTERM); kerr != nil && !errors.Is(kerr, syscall.ESRCH) {
		return fmt.Errorf("testenv: signal vault: %w", kerr)
	}
	_ = syscall.Kill(-pgid, syscall.SIGCONT)
	timer := time.NewTimer(vaultStopTimeout)
	defer timer.Stop()
	select {
	case <-v.done:
	case <-timer.C:
		if kerr := syscall.Kill(-pgid, syscall.SIGKILL); kerr != nil && !errors.Is(kerr, syscall.ESRCH) {
			return fmt.Errorf("testenv: kill vault: %w", kerr)
		}
		<-v.done
		err = fmt.Errorf("testenv: vault on %s ignored SIGTERM for %v and was killed", v.Addr, vaultStopTimeout)
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL) // plugin processes, if any; ESRCH when none
	return err
}

// removeVaultLeftovers removes Vault dirs in root whose starter and server are both gone, which
// happens when a test binary dies without calling Stop.
func removeVaultLeftovers(root string) {
	dirs, _ := filepath.Glob(filepath.Join(root, vaultDirPrefix+"*"))
	for _, dir := range dirs {
		owner, err := readPid(filepath.Join(dir, ownerFile))
		if err != nil || owner == os.Getpid() || processAlive(owner) {
			continue
		}
		if pid, err := readPid(filepath.Join(dir, vaultPidFile)); err == nil && processAlive(pid) {
			continue
		}
		_ = os.RemoveAll(dir)
	}
}

// The state below ties Vault servers to the lifetime of the test binary, like the PostgreSQL
// state in shared.go; nothing outside this file touches it.
var sharedVault struct {
	once sync.Once
	v    *Vault
	err  error
}

// registerVault enters v in the registry that [StopAll] (and so [Main] and [Run]) stops.
func registerVault(v *Vault) { register(v) }

func unregisterVault(v *Vault) { unregister(v) }

// VaultServer returns the Vault server shared by every test of this binary, started on first use
// (building the binary first if needed, see [VaultBinary]). TestMain must call [Main]. When the
// binary cannot be had the test fails if CI is "true" and is skipped otherwise; a server that
// fails to start fails the test with the tail of its log. Tests must not stop, pause or
// reconfigure the shared server beyond their own mounts, roles and tokens: use unique mount names
// ([Vault.UniqueMount]) and [StartTestVault] for a server to stop or pause.
func VaultServer(t testing.TB) *Vault {
	t.Helper()
	if !mainActive.Load() {
		t.Fatal("testenv.VaultServer: TestMain must call testenv.Main(m) (or testenv.Run) so the shared server is stopped at the end")
	}
	bin := VaultBinary(t)
	sharedVault.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), sharedStartTimeout)
		defer cancel()
		sharedVault.v, sharedVault.err = StartVault(ctx, VaultOptions{Binary: bin})
	})
	if sharedVault.err != nil {
		skipOrFail(t, sharedVault.err)
	}
	return sharedVault.v
}

// StartTestVault starts a private Vault server for a test that stops or pauses it, stopped at
// cleanup. A missing binary skips or fails the test as in [VaultServer].
func StartTestVault(t testing.TB) *Vault {
	t.Helper()
	bin := VaultBinary(t)
	ctx, cancel := context.WithTimeout(t.Context(), sharedStartTimeout)
	defer cancel()
	v, err := StartVault(ctx, VaultOptions{Binary: bin})
	if err != nil {
		skipOrFail(t, err)
	}
	t.Cleanup(func() {
		if err := v.Stop(); err != nil {
			t.Error(err)
		}
	})
	return v
}
