package rotate

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/credswap/credswap/creds"
)

// publisher writes a new credential where every proxy reads it.
type publisher interface {
	// prepare returns the version a check-and-set publish must replace.
	prepare(ctx context.Context) (int, error)
	publish(ctx context.Context, c creds.Credential, cas int) error
}

// filePublisher replaces the credential file atomically.
type filePublisher struct{ path string }

func (filePublisher) prepare(context.Context) (int, error) { return 0, nil }

func (f filePublisher) publish(_ context.Context, c creds.Credential, _ int) error {
	b, err := json.Marshal(map[string]string{"username": c.Username, "password": c.Password})
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(f.path), ".credswap-publish-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), f.path); err != nil {
		return fmt.Errorf("replacing %s: %w", f.path, err)
	}
	return nil
}

// vaultPublisher writes a KV v2 secret with check-and-set, so that two
// proxies cannot both publish over the same version.
type vaultPublisher struct {
	v                    *creds.Vault
	mount, path          string
	userKey, passwordKey string
}

func (p vaultPublisher) prepare(ctx context.Context) (int, error) {
	return p.v.KVCurrentVersion(ctx, p.mount, p.path)
}

func (p vaultPublisher) publish(ctx context.Context, c creds.Credential, cas int) error {
	return p.v.KVPutCAS(ctx, p.mount, p.path, map[string]any{p.userKey: c.Username, p.passwordKey: c.Password}, cas)
}

// nopPublisher publishes nothing (vault-static: Vault is the source).
type nopPublisher struct{}

func (nopPublisher) prepare(context.Context) (int, error)                 { return 0, nil }
func (nopPublisher) publish(context.Context, creds.Credential, int) error { return nil }
