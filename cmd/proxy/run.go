package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/creds"
	"github.com/credswap/credswap/internal/app"
	"github.com/credswap/credswap/internal/logging"
)

// newLogger builds the process logger. JSON logs are sampled as zap's
// production logger samples them (per second and message, the first 100
// entries, then every 100th), except entries marked logging.Audit: failed
// client logins, admin API calls and rotation lines are all written.
func newLogger(c config.Log) (*zap.Logger, error) {
	var zc zap.Config
	var opts []zap.Option
	if c.Format == "console" {
		zc = zap.NewDevelopmentConfig() // not sampled
	} else {
		zc = zap.NewProductionConfig()
		zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
		s := zc.Sampling
		zc.Sampling = nil
		opts = append(opts, zap.WrapCore(func(core zapcore.Core) zapcore.Core {
			return logging.NewSampledCore(core, time.Second, s.Initial, s.Thereafter)
		}))
	}
	lvl, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, err
	}
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.DisableStacktrace = lvl > zapcore.DebugLevel
	return zc.Build(opts...)
}

func runProxy(ctx context.Context, path string) error {
	if path == "" {
		return errors.New("--config is required (see examples/postgres.yaml)")
	}
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg.Log)
	if err != nil {
		return err
	}
	defer log.Sync()
	if ctx == nil {
		ctx = context.Background()
	}
	bi := binaryInfo()
	opts := app.Options{Logger: log, Version: bi.Version, Build: bi}
	// Fault injection for crash-recovery tests of rotations: the process
	// kills itself right after the named phase is journaled.
	if phase := os.Getenv("CREDSWAP_TEST_KILL_AFTER_PHASE"); phase != "" {
		opts.AfterRotationPhase = func(p string) {
			if p == phase {
				log.Warn("test fault injection: killing the process", zap.String("after_phase", p))
				log.Sync()
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
		}
	}
	a, err := app.Start(ctx, cfg, opts)
	if err != nil {
		return err
	}
	// Signals are caught before systemd hears READY=1, so a SIGHUP
	// (ExecReload) right after it is never lost.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	sd := newNotifier()
	sdWarn := func(err error) {
		if err != nil {
			log.Warn("telling systemd the service state failed", zap.Error(err))
		}
	}
	names := make([]string, len(cfg.Backends))
	for i, b := range cfg.Backends {
		names[i] = b.Name
	}
	sdWarn(sd.ready("serving backends " + strings.Join(names, ", ")))
	for {
		select {
		case err := <-a.Errors():
			log.Error("serving failed; shutting down", zap.Error(err))
			sdWarn(sd.stopping("serving failed; shutting down"))
			shutdown(a, cfg)
			return err
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				sdWarn(sd.reloading())
				status := reload(ctx, a, path, log)
				sdWarn(sd.ready(status))
				continue
			}
			log.Info("shutting down", zap.String("signal", sig.String()), zap.Duration("timeout", cfg.ShutdownTimeout.D()))
			sdWarn(sd.stopping("shutting down; sessions may finish for " + cfg.ShutdownTimeout.D().String()))
			shutdown(a, cfg)
			return nil
		}
	}
}

func shutdown(a *app.App, cfg *config.Config) {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout.D())
	defer cancel()
	a.Shutdown(ctx)
}

// reload applies the configuration file to the running proxy and returns
// a one-line outcome for systemd's STATUS.
func reload(ctx context.Context, a *app.App, path string, log *zap.Logger) string {
	cfg, err := config.Load(path)
	if err != nil {
		log.Error("reload: configuration rejected; keeping the running one", zap.Error(err))
		return "reload rejected (see the log); running with the previous configuration"
	}
	if err := a.Reload(ctx, cfg); err != nil {
		log.Warn("reload applied with warnings", zap.Error(err))
		return "reloaded with warnings (see the log)"
	}
	log.Info("configuration reloaded")
	return "configuration reloaded"
}

// runCheck validates the configuration and performs a test login for each
// backend with the credential its source holds now.
func runCheck(ctx context.Context, out interface{ Write([]byte) (int, error) }, path string) error {
	if path == "" {
		return errors.New("--config is required")
	}
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	if ctx == nil {
		ctx = context.Background()
	}
	var v *creds.Vault
	if cfg.Vault.Enabled() {
		if v, err = app.NewVault(cfg.Vault, zap.NewNop()); err != nil {
			return err
		}
	}
	failed := 0
	for _, bc := range cfg.Backends {
		if err := app.CheckBackend(ctx, bc, v); err != nil {
			failed++
			fmt.Fprintf(out, "backend %s: FAIL: %v\n", bc.Name, err)
			continue
		}
		fmt.Fprintf(out, "backend %s: ok (%s)\n", bc.Name, bc.Upstream)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d backends failed the check", failed, len(cfg.Backends))
	}
	return nil
}
