// Package app assembles a running proxy from a validated configuration:
// credential stores, backends, protocol handlers, listeners and the admin
// API. cmd/proxy runs it; tests and benchmarks start the same assembly
// in-process.
package app

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"

	"github.com/credswap/credswap/admin"
	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/creds"
	"github.com/credswap/credswap/proxy"
	"github.com/credswap/credswap/proxy/mysql"
	"github.com/credswap/credswap/proxy/postgres"
	"github.com/credswap/credswap/rotate"
)

// Options are the process-level inputs that are not configuration.
type Options struct {
	Logger  *zap.Logger
	Version string
	// Build identifies the binary in the metric credswap_build_info. An
	// empty Version is taken from Version, an empty GoVersion from the
	// running Go, and an empty Commit or Date is "unknown".
	Build admin.BuildInfo
	// Registry receives the metrics; nil creates one.
	Registry *prometheus.Registry
	// AfterRotationPhase, if set, runs after every rotation phase is
	// journaled (crash-recovery tests inject faults with it).
	AfterRotationPhase func(phase string)
}

// App is a running proxy.
type App struct {
	cfg      *config.Config
	log      *zap.Logger
	reg      *prometheus.Registry
	backends []*backend
	loops    *postgres.Loops
	memory   *proxy.MemoryBudget // shared by every backend's sessions
	vault    *creds.Vault
	stopBg   context.CancelFunc
	admin    *admin.Server
	errs     chan error
	wg       sync.WaitGroup
	stopOnce sync.Once
}

type backend struct {
	cfg   config.Backend
	store *creds.Store
	rt    *proxy.Backend
	// setUsers replaces the protocol handler's local logins.
	setUsers func(clients []config.Client) error
	server   *proxy.Server
	rotator  *rotate.Rotator
}

// Start builds everything from cfg, opens every listener and starts
// serving. It fails if a listener cannot be opened or a credential source
// cannot be read at all; a database that is down only makes the backend
// not ready.
func Start(ctx context.Context, cfg *config.Config, opts Options) (_ *App, err error) {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
		opts.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	opts.Registry.MustRegister(admin.NewBuildInfoCollector(buildInfo(opts)))
	a := &App{cfg: cfg, log: opts.Logger, reg: opts.Registry, errs: make(chan error, len(cfg.Backends)+1)}
	defer func() {
		if err != nil {
			a.Shutdown(context.Background())
		}
	}()
	metrics := proxy.NewMetrics(opts.Registry)
	bgCtx, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	a.stopBg = stopBg
	if cfg.Vault.Enabled() {
		if a.vault, err = NewVault(cfg.Vault, a.log.Named("vault")); err != nil {
			return nil, err
		}
		a.wg.Add(1)
		go func() { defer a.wg.Done(); a.vault.Run(bgCtx) }()
	}
	// Relay loops (Linux): one per two CPUs, at least one. Elsewhere every
	// session uses the goroutine relay.
	if loops, lerr := postgres.NewLoops(max(1, runtime.GOMAXPROCS(0)/2), a.log.Named("relay")); lerr == nil {
		a.loops = loops
	} else {
		a.log.Info("relay loops unavailable; using goroutine relay", zap.Error(lerr))
	}
	warnReadableSecrets(cfg, a.log)
	a.memory = proxy.NewMemoryBudget(cfg.Limits.MaxPartialMessageMemory.Int(), cfg.Limits.PartialMessageMemoryWait.D(),
		a.log.Named("memory"))
	rotMetrics := rotate.NewMetrics(opts.Registry)
	var rts []*proxy.Backend
	rotators := map[string]*rotate.Rotator{}
	for _, bc := range cfg.Backends {
		b, err := a.startBackend(ctx, bc, metrics)
		if err != nil {
			return nil, fmt.Errorf("backend %s: %w", bc.Name, err)
		}
		a.backends = append(a.backends, b)
		rts = append(rts, b.rt)
		if bc.Rotation.Enabled() {
			if b.rotator, err = a.newRotator(bc, b, rotMetrics, opts.AfterRotationPhase); err != nil {
				return nil, fmt.Errorf("backend %s: rotation: %w", bc.Name, err)
			}
			b.rotator.Start(bgCtx)
			rotators[bc.Name] = b.rotator
		}
	}
	a.admin = admin.New(admin.Options{
		Backends:     rts,
		Rotators:     rotators,
		TokenFile:    cfg.Admin.TokenFile,
		AllowedHosts: cfg.Admin.AllowedHosts,
		MaxConns:     cfg.Admin.MaxConnections,
		Gatherer:     opts.Registry,
		Version:      opts.Version,
		Logger:       a.log.Named("admin"),
	})
	if err := a.admin.Listen(cfg.Admin.Listen); err != nil {
		return nil, fmt.Errorf("admin listener: %w", err)
	}
	a.goServe("admin", a.admin.Serve)
	for _, b := range a.backends {
		a.goServe("backend "+b.cfg.Name, b.server.Serve)
	}
	a.log.Info("credswap started", zap.String("admin", a.admin.Addr().String()), zap.Int("backends", len(a.backends)))
	return a, nil
}

// buildInfo completes opts.Build with opts.Version and the running Go.
func buildInfo(opts Options) admin.BuildInfo {
	b := opts.Build
	if b.Version == "" {
		b.Version = opts.Version
	}
	if b.GoVersion == "" {
		b.GoVersion = runtime.Version()
	}
	for _, f := range []*string{&b.Version, &b.Commit, &b.Date} {
		if *f == "" {
			*f = "unknown"
		}
	}
	return b
}

func (a *App) goServe(what string, serve func() error) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := serve(); err != nil {
			a.errs <- fmt.Errorf("%s: %w", what, err)
		}
	}()
}

// Errors delivers fatal serving errors (a listener that stopped accepting).
func (a *App) Errors() <-chan error { return a.errs }

// NewVault builds the Vault client shared by the vault-kv and vault-db
// sources.
func NewVault(c config.Vault, log *zap.Logger) (*creds.Vault, error) {
	return creds.NewVault(creds.VaultOptions{
		Address:   c.Address,
		CAFile:    c.CAFile,
		Namespace: c.Namespace,
		Timeout:   c.Timeout.D(),
		Auth: creds.VaultAuth{
			Method:       c.Auth.Method,
			Token:        c.Auth.Token,
			TokenFile:    c.Auth.Path,
			Mount:        c.Auth.Mount,
			RoleID:       c.Auth.RoleID,
			SecretIDFile: c.Auth.SecretIDFile,
		},
		Logger: log,
	})
}

func newSource(c config.Credential, v *creds.Vault, log *zap.Logger) (creds.Source, error) {
	switch c.Source {
	case "file":
		return creds.NewFileSource(c.Path, creds.FileOptions{Logger: log}), nil
	case "env":
		return creds.NewEnvSource(c.UsernameEnv, c.PasswordEnv, nil), nil
	case "vault-kv", "vault-db":
		if v == nil {
			return nil, fmt.Errorf("credential source %s needs the vault block", c.Source)
		}
		if c.Source == "vault-kv" {
			return creds.NewVaultKVSource(v, c.Mount, c.Path, c.KVVersion, c.UsernameKey, c.PasswordKey), nil
		}
		if c.StaticRole != "" {
			return creds.NewVaultStaticSource(v, c.Mount, c.StaticRole), nil
		}
		return creds.NewVaultDynamicSource(v, c.Mount, c.Role, log.Named("vault-db")), nil
	}
	return nil, fmt.Errorf("credential source %q is not supported", c.Source)
}

// NewMySQLDialer builds the MySQL dialer a backend with protocol mysql
// uses for sessions, test logins, KILL and rotations.
func NewMySQLDialer(bc config.Backend) (*mysql.Dialer, error) {
	upTLS, err := proxy.UpstreamTLSConfig(bc.UpstreamTLS, bc.Upstream)
	if err != nil {
		return nil, err
	}
	var key *rsa.PublicKey
	if bc.UpstreamRSAPublicKeyFile != "" {
		if key, err = mysql.LoadServerKey(bc.UpstreamRSAPublicKeyFile); err != nil {
			return nil, fmt.Errorf("upstream_rsa_public_key_file: %w", err)
		}
	}
	return mysql.NewDialer(mysql.DialerOptions{
		Upstream:  bc.Upstream,
		TLS:       upTLS,
		Timeout:   min(bc.Limits.ConnectTimeout.D(), 10*time.Second),
		Auth:      bc.UpstreamAuth,
		ServerKey: key,
	})
}

// verifier returns the test login of a backend's protocol.
func verifier(bc config.Backend) (creds.VerifyFunc, error) {
	switch bc.Protocol {
	case "postgres":
		d, err := NewDialer(bc)
		if err != nil {
			return nil, err
		}
		return d.Verify, nil
	case "mysql":
		d, err := NewMySQLDialer(bc)
		if err != nil {
			return nil, err
		}
		return d.Verify, nil
	}
	return nil, fmt.Errorf("protocol %q is not supported", bc.Protocol)
}

// NewDialer builds the PostgreSQL dialer a backend uses for sessions and
// test logins.
func NewDialer(bc config.Backend) (*postgres.Dialer, error) {
	upTLS, err := proxy.UpstreamTLSConfig(bc.UpstreamTLS, bc.Upstream)
	if err != nil {
		return nil, err
	}
	return postgres.NewDialer(postgres.DialerOptions{
		Upstream:       bc.Upstream,
		TLS:            upTLS,
		Timeout:        min(bc.Limits.ConnectTimeout.D(), 10*time.Second),
		VerifyDatabase: bc.VerifyDatabase,
		Auth:           bc.UpstreamAuth,
	})
}

func (a *App) startBackend(ctx context.Context, bc config.Backend, metrics *proxy.Metrics) (*backend, error) {
	log := a.log.With(zap.String("backend", bc.Name))
	var (
		pgDialer *postgres.Dialer
		myDialer *mysql.Dialer
		verify   creds.VerifyFunc
		err      error
	)
	switch bc.Protocol {
	case "postgres":
		if pgDialer, err = NewDialer(bc); err != nil {
			return nil, err
		}
		verify = pgDialer.Verify
	case "mysql":
		if myDialer, err = NewMySQLDialer(bc); err != nil {
			return nil, err
		}
		verify = myDialer.Verify
	default:
		return nil, fmt.Errorf("protocol %q is not supported", bc.Protocol)
	}
	warnUnverifiedUpstream(bc, log)
	src, err := newSource(bc.Credential, a.vault, log)
	if err != nil {
		return nil, err
	}
	store := creds.NewStore(creds.StoreOptions{
		Source:          src,
		Verify:          verify,
		RefreshInterval: bc.Credential.RefreshInterval.D(),
		Logger:          log.Named("creds"),
	})
	if err := store.Start(ctx); err != nil {
		return nil, fmt.Errorf("credential source: %w", err)
	}
	b := &backend{cfg: bc, store: store}
	policy, err := proxy.ParseDeadlinePolicy(bc.OnDeadline)
	if err != nil {
		store.Stop()
		return nil, err
	}
	b.rt = proxy.NewBackend(proxy.BackendOptions{
		Name:                   bc.Name,
		Protocol:               bc.Protocol,
		Listen:                 bc.Listen,
		Upstream:               bc.Upstream,
		Store:                  store,
		MaxClientConns:         bc.Limits.MaxClientConns,
		MaxHandshakes:          bc.Limits.MaxHandshakes,
		MaxHandshakesPerSource: bc.Limits.MaxHandshakesPerSource,
		MaxIdle:                bc.Pool.MaxIdle,
		IdleTimeout:            bc.Pool.IdleTimeout.D(),
		ConnectTimeout:         bc.Limits.ConnectTimeout.D(),
		DrainDeadline:          bc.DrainDeadline.D(),
		OnDeadline:             policy,
		DrainConnectionBudget:  bc.DrainConnectionBudget,
		Logger:                 log,
		MemoryBudget:           a.memory,
		Metrics:                metrics,
	})
	b.rt.Start(context.WithoutCancel(ctx))
	fail := func(err error) (*backend, error) {
		b.rt.Stop()
		store.Stop()
		return nil, err
	}
	clientTLS, err := proxy.ClientTLSConfig(bc.ClientTLS)
	if err != nil {
		return fail(err)
	}
	var handler proxy.Handler
	switch bc.Protocol {
	case "postgres":
		users, err := postgres.LoadUsers(bc.Clients)
		if err != nil {
			return fail(err)
		}
		h, err := postgres.NewHandler(postgres.Options{
			Backend:          b.rt,
			Dialer:           pgDialer,
			Users:            users,
			ClientTLS:        clientTLS,
			TLSRequired:      bc.ClientTLS.Required,
			HandshakeTimeout: bc.Limits.HandshakeTimeout.D(),
			MaxMessageSize:   bc.Limits.MaxMessageSize.Int(),
			MaxIdle:          bc.Pool.MaxIdle,
			Loops:            a.loops,
			Logger:           log,
		})
		if err != nil {
			return fail(err)
		}
		handler = h
		b.setUsers = usersSetter(postgres.LoadUsers, h.SetUsers)
	case "mysql":
		users, err := mysql.LoadUsers(bc.Clients)
		if err != nil {
			return fail(err)
		}
		h, err := mysql.NewHandler(mysql.Options{
			Backend:          b.rt,
			Dialer:           myDialer,
			Users:            users,
			ClientTLS:        clientTLS,
			TLSRequired:      bc.ClientTLS.Required,
			HandshakeTimeout: bc.Limits.HandshakeTimeout.D(),
			MaxMessageSize:   bc.Limits.MaxMessageSize.Int(),
			MaxIdle:          bc.Pool.MaxIdle,
			LocalInfile:      bc.LocalInfile.Allow,
			Logger:           log,
		})
		if err != nil {
			return fail(err)
		}
		handler = h
		b.setUsers = usersSetter(mysql.LoadUsers, h.SetUsers)
	}
	b.server = proxy.NewServer(b.rt, handler)
	if err := b.server.Listen(bc.Listen); err != nil {
		return fail(err)
	}
	return b, nil
}

func (a *App) newRotator(bc config.Backend, b *backend, m *rotate.Metrics, after func(string)) (*rotate.Rotator, error) {
	db, err := rotationDB(bc)
	if err != nil {
		return nil, err
	}
	var adminSrc creds.Source
	if bc.Rotation.AdminCredential.Source != "" {
		if adminSrc, err = newSource(bc.Rotation.AdminCredential, a.vault, a.log); err != nil {
			return nil, err
		}
	}
	return rotate.New(rotate.Options{
		Backend:       b.rt,
		Config:        bc.Rotation,
		Credential:    bc.Credential,
		DB:            db,
		Admin:         adminSrc,
		Vault:         a.vault,
		DrainDeadline: bc.DrainDeadline.D(),
		Logger:        a.log.Named("rotate"),
		Metrics:       m,
		AfterPhase:    after,
	})
}

// usersSetter returns a function that loads clients with load and, if
// they are valid, hands them to set (a protocol handler's SetUsers).
func usersSetter[U any](load func([]config.Client) (U, error), set func(U)) func([]config.Client) error {
	return func(clients []config.Client) error {
		users, err := load(clients)
		if err == nil {
			set(users)
		}
		return err
	}
}

// rotationDB is the database a backend's rotations change passwords in.
func rotationDB(bc config.Backend) (rotate.Database, error) {
	switch bc.Protocol {
	case "postgres":
		dialer, err := NewDialer(bc)
		if err != nil {
			return nil, err
		}
		return rotate.Postgres{Dialer: dialer}, nil
	case "mysql":
		dialer, err := NewMySQLDialer(bc)
		if err != nil {
			return nil, err
		}
		return rotate.MySQL{Addr: bc.Upstream, Login: dialer.LoginGuard(), Timeout: min(bc.Limits.ConnectTimeout.D(), 10*time.Second)}, nil
	}
	return nil, fmt.Errorf("protocol %q is not supported", bc.Protocol)
}

// Rotator returns the rotator of the backend named name, or nil.
func (a *App) Rotator(name string) *rotate.Rotator {
	for _, b := range a.backends {
		if b.cfg.Name == name {
			return b.rotator
		}
	}
	return nil
}

// Backend returns the runtime of the backend named name, or nil.
func (a *App) Backend(name string) *proxy.Backend {
	for _, b := range a.backends {
		if b.cfg.Name == name {
			return b.rt
		}
	}
	return nil
}

// Handler returns the protocol handler serving the backend named name, or
// nil: a *postgres.Handler or a *mysql.Handler.
func (a *App) Handler(name string) proxy.Handler {
	for _, b := range a.backends {
		if b.cfg.Name == name {
			return b.server.Handler
		}
	}
	return nil
}

// ListenAddr returns the address the backend named name listens on.
func (a *App) ListenAddr(name string) string {
	for _, b := range a.backends {
		if b.cfg.Name == name {
			return b.server.Addr().String()
		}
	}
	return ""
}

// AdminAddr returns the admin API's address.
func (a *App) AdminAddr() string { return a.admin.Addr().String() }

// Reload applies a new configuration to the running proxy: client users
// and credential sources. Changes that need new listeners (names, listen
// addresses, upstreams, TLS) are reported and ignored until a restart.
func (a *App) Reload(ctx context.Context, cfg *config.Config) error {
	var errs []error
	for _, nb := range cfg.Backends {
		var b *backend
		for _, ob := range a.backends {
			if ob.cfg.Name == nb.Name {
				b = ob
			}
		}
		if b == nil {
			errs = append(errs, fmt.Errorf("backend %s: new backends need a restart", nb.Name))
			continue
		}
		if nb.Listen != b.cfg.Listen || nb.Upstream != b.cfg.Upstream || nb.UpstreamTLS != b.cfg.UpstreamTLS || nb.ClientTLS != b.cfg.ClientTLS ||
			nb.UpstreamAuth != b.cfg.UpstreamAuth || nb.UpstreamRSAPublicKeyFile != b.cfg.UpstreamRSAPublicKeyFile {
			errs = append(errs, fmt.Errorf("backend %s: listen, upstream, TLS and upstream_auth changes need a restart", nb.Name))
		}
		if err := b.setUsers(nb.Clients); err != nil {
			errs = append(errs, fmt.Errorf("backend %s: %w", nb.Name, err))
		}
		if !reflect.DeepEqual(nb.Credential, b.cfg.Credential) {
			src, err := newSource(nb.Credential, a.vault, a.log.With(zap.String("backend", nb.Name)))
			if err == nil {
				err = b.store.SetSource(ctx, src)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("backend %s: credential: %w", nb.Name, err))
			}
		} else if _, err := b.store.Refresh(ctx); err != nil {
			errs = append(errs, fmt.Errorf("backend %s: credential refresh: %w", nb.Name, err))
		}
		b.cfg.Clients, b.cfg.Credential = nb.Clients, nb.Credential
	}
	return errors.Join(errs...)
}

// Shutdown stops accepting, lets sessions finish until ctx ends, closes
// the rest with an error, and stops background work. Idempotent.
func (a *App) Shutdown(ctx context.Context) {
	a.stopOnce.Do(func() {
		var wg sync.WaitGroup
		for _, b := range a.backends {
			wg.Add(1)
			go func(b *backend) {
				defer wg.Done()
				b.server.Shutdown(ctx)
			}(b)
		}
		wg.Wait()
		for _, b := range a.backends {
			if b.rotator != nil {
				b.rotator.Stop()
			}
		}
		if a.admin != nil {
			actx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			a.admin.Shutdown(actx)
			cancel()
		}
		for _, b := range a.backends {
			b.rt.Stop()
			b.store.Stop()
		}
		if a.loops != nil {
			a.loops.Close()
		}
		if a.stopBg != nil {
			a.stopBg()
		}
		a.wg.Wait()
		a.log.Info("credswap stopped")
	})
}

// CheckBackend reads the backend's credential source once and performs a
// test login with it. v is the Vault client for vault sources (nil if none).
func CheckBackend(ctx context.Context, bc config.Backend, v *creds.Vault) error {
	verify, err := verifier(bc)
	if err != nil {
		return err
	}
	src, err := newSource(bc.Credential, v, zap.NewNop())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, bc.Limits.ConnectTimeout.D())
	defer cancel()
	c, err := src.Fetch(ctx)
	if err != nil {
		return fmt.Errorf("reading credential: %w", err)
	}
	if err := verify(ctx, c); err != nil {
		return fmt.Errorf("test login as %s: %w", c.Username, err)
	}
	return nil
}
