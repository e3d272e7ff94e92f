package creds

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	vault "github.com/hashicorp/vault/api"
	"go.uber.org/zap"
)

// VaultAuth says how a Vault client logs in.
type VaultAuth struct {
	// Method is "token", "token_file" or "approle".
	Method string
	// Token is the token for method token.
	Token string
	// TokenFile is read for method token_file, again whenever it changes
	// (a Vault Agent sink rewrites it).
	TokenFile string
	// Mount, RoleID and SecretIDFile configure method approle.
	Mount        string
	RoleID       string
	SecretIDFile string
}

// VaultOptions configures a Vault client.
type VaultOptions struct {
	Address   string
	CAFile    string
	Namespace string
	// Timeout bounds one request (default 10s).
	Timeout time.Duration
	Auth    VaultAuth
	Logger  *zap.Logger
}

// Vault is a logged-in Vault client shared by the vault-kv and vault-db
// sources of a process. It keeps its token usable: a token file is read
// again when it changes; an AppRole token is renewed while Vault allows it
// and replaced by a new login when it no longer can (or when Vault answers
// 403). Every call takes a context. Safe for concurrent use.
type Vault struct {
	opts VaultOptions
	log  *zap.Logger
	api  *vault.Client

	mu        sync.Mutex
	token     string
	tokenMod  time.Time // token file modification time last read
	expires   time.Time // AppRole token expiry (zero: unknown or none)
	lastLogin time.Time
}

// NewVault builds a client from explicit settings: no VAULT_* environment
// variable (address, token, agent address, namespace, rate limit) changes
// where or as whom it connects.
func NewVault(opts VaultOptions) (*Vault, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	cfg := vault.DefaultConfig()
	if cfg.Error != nil {
		return nil, fmt.Errorf("vault client: %w", cfg.Error)
	}
	cfg.Address = opts.Address
	cfg.AgentAddress = ""
	cfg.Timeout = opts.Timeout
	cfg.MaxRetries = 0 // the Store retries with its own backoff
	cfg.Limiter = nil
	cfg.SRVLookup = false
	tcfg := &vault.TLSConfig{CACert: opts.CAFile}
	if err := cfg.ConfigureTLS(tcfg); err != nil {
		return nil, fmt.Errorf("vault ca_file: %w", err)
	}
	if t, ok := cfg.HttpClient.Transport.(*http.Transport); ok && t.TLSClientConfig != nil {
		t.TLSClientConfig.MinVersion = tls.VersionTLS12
	}
	c, err := vault.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	c.ClearToken()
	c.ClearNamespace()
	if opts.Namespace != "" {
		c.SetNamespace(opts.Namespace)
	}
	v := &Vault{opts: opts, log: opts.Logger, api: c}
	if opts.Auth.Method == "token" {
		v.token = opts.Auth.Token
		c.SetToken(opts.Auth.Token)
	}
	return v, nil
}

// client returns the API client with a token that should be valid.
func (v *Vault) client(ctx context.Context) (*vault.Client, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	switch v.opts.Auth.Method {
	case "token_file":
		st, err := os.Stat(v.opts.Auth.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("vault token file: %w", err)
		}
		if v.token == "" || !st.ModTime().Equal(v.tokenMod) {
			b, err := os.ReadFile(v.opts.Auth.TokenFile)
			if err != nil {
				return nil, fmt.Errorf("vault token file: %w", err)
			}
			tok := strings.TrimSpace(string(b))
			if tok == "" {
				return nil, errors.New("vault token file is empty")
			}
			if tok != v.token {
				v.log.Info("vault token read from file", zap.String("path", v.opts.Auth.TokenFile))
			}
			v.token, v.tokenMod = tok, st.ModTime()
			v.api.SetToken(tok)
		}
	case "approle":
		// Log in again a little before the token expires.
		if v.token == "" || (!v.expires.IsZero() && time.Until(v.expires) < v.opts.Timeout) {
			if err := v.loginLocked(ctx); err != nil {
				return nil, err
			}
		}
	}
	return v.api, nil
}

// loginLocked logs in with AppRole. v.mu is held.
func (v *Vault) loginLocked(ctx context.Context) error {
	b, err := os.ReadFile(v.opts.Auth.SecretIDFile)
	if err != nil {
		return fmt.Errorf("vault approle secret_id_file: %w", err)
	}
	mount := v.opts.Auth.Mount
	if mount == "" {
		mount = "approle"
	}
	c, err := v.api.Clone() // a login must not send the stale token
	if err != nil {
		return err
	}
	c.ClearToken()
	secret, err := c.Logical().WriteWithContext(ctx, "auth/"+mount+"/login", map[string]any{
		"role_id":   v.opts.Auth.RoleID,
		"secret_id": strings.TrimSpace(string(b)),
	})
	if err != nil {
		return fmt.Errorf("vault approle login: %w", err)
	}
	if secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "" {
		return errors.New("vault approle login returned no token")
	}
	v.token = secret.Auth.ClientToken
	v.api.SetToken(v.token)
	v.lastLogin = time.Now()
	v.expires = time.Time{}
	if secret.Auth.LeaseDuration > 0 {
		v.expires = time.Now().Add(time.Duration(secret.Auth.LeaseDuration) * time.Second)
	}
	v.log.Info("logged in to vault with approle", zap.Time("token_expires", v.expires))
	return nil
}

// Run keeps the token alive until ctx ends: an AppRole token is renewed at
// half its lifetime, and replaced by a new login when renewal fails or Vault
// no longer extends it; a renewable token given inline is renewed the same
// way. A token file needs no background work: whoever writes it (Vault
// Agent) renews it. Start it with go v.Run(ctx).
func (v *Vault) Run(ctx context.Context) {
	switch v.opts.Auth.Method {
	case "approle":
	case "token":
		if !v.lookupSelf(ctx) {
			return // not renewable, or no TTL
		}
	default:
		return
	}
	for {
		v.mu.Lock()
		exp := v.expires
		v.mu.Unlock()
		wait := time.Minute
		if !exp.IsZero() {
			wait = max(time.Until(exp)/2, time.Second)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		v.renewOrLogin(ctx)
	}
}

// lookupSelf learns the expiry of an inline token and reports whether it
// is renewable.
func (v *Vault) lookupSelf(ctx context.Context) bool {
	rctx, cancel := context.WithTimeout(ctx, v.opts.Timeout)
	defer cancel()
	sec, err := v.api.Auth().Token().LookupSelfWithContext(rctx)
	if err != nil || sec == nil {
		if err != nil {
			v.log.Warn("vault token lookup failed", zap.Error(err))
		}
		return false
	}
	ttl, _ := jsonInt(sec.Data["ttl"])
	renewable, _ := sec.Data["renewable"].(bool)
	if ttl <= 0 || !renewable {
		return false
	}
	v.mu.Lock()
	v.expires = time.Now().Add(time.Duration(ttl) * time.Second)
	v.mu.Unlock()
	return true
}

func (v *Vault) renewOrLogin(ctx context.Context) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.token == "" {
		if err := v.loginLocked(ctx); err != nil {
			v.log.Warn("vault login failed", zap.Error(err))
		}
		return
	}
	rctx, cancel := context.WithTimeout(ctx, v.opts.Timeout)
	defer cancel()
	secret, err := v.api.Auth().Token().RenewSelfWithContext(rctx, 0)
	if err == nil && secret != nil && secret.Auth != nil {
		newExp := time.Now().Add(time.Duration(secret.Auth.LeaseDuration) * time.Second)
		if newExp.After(v.expires.Add(time.Second)) {
			v.expires = newExp
			return
		}
	}
	if v.opts.Auth.Method != "approle" {
		v.log.Warn("vault token could not be renewed further; it expires", zap.Time("expires", v.expires), zap.Error(err))
		return
	}
	// Not renewable any more (max TTL) or failed: log in again.
	if err := v.loginLocked(rctx); err != nil {
		v.log.Warn("vault login failed", zap.Error(err))
	}
}

// read performs a logical read, logging in again once after a 403 from a
// token that expired.
func (v *Vault) read(ctx context.Context, path string) (*vault.Secret, error) {
	c, err := v.client(ctx)
	if err != nil {
		return nil, err
	}
	s, err := c.Logical().ReadWithContext(ctx, path)
	var re *vault.ResponseError
	if errors.As(err, &re) && re.StatusCode == http.StatusForbidden && v.opts.Auth.Method == "approle" {
		v.mu.Lock()
		lerr := v.loginLocked(ctx)
		v.mu.Unlock()
		if lerr != nil {
			return nil, err
		}
		s, err = c.Logical().ReadWithContext(ctx, path)
	}
	return s, err
}

// readVersion reads one version of a KV v2 secret.
func (v *Vault) readVersion(ctx context.Context, path string, version int) (*vault.Secret, error) {
	c, err := v.client(ctx)
	if err != nil {
		return nil, err
	}
	return c.Logical().ReadWithDataWithContext(ctx, path, map[string][]string{"version": {strconv.Itoa(version)}})
}

// stringField returns a string from a secret's data.
func stringField(data map[string]any, key string) (string, error) {
	raw, ok := data[key]
	if !ok {
		return "", fmt.Errorf("field %q missing", key)
	}
	s, ok := raw.(string)
	if !ok {
		return "", fmt.Errorf("field %q is not a string", key)
	}
	return s, nil
}

// KVCurrentVersion returns the current version of a KV v2 secret (0 if it
// does not exist).
func (v *Vault) KVCurrentVersion(ctx context.Context, mount, path string) (int, error) {
	meta, err := v.read(ctx, mount+"/metadata/"+path)
	if err != nil {
		return 0, err
	}
	if meta == nil {
		return 0, nil
	}
	return jsonInt(meta.Data["current_version"])
}

// KVPutCAS writes a new version of a KV v2 secret if its current version
// is still cas (0: the secret must not exist yet).
func (v *Vault) KVPutCAS(ctx context.Context, mount, path string, data map[string]any, cas int) error {
	c, err := v.client(ctx)
	if err != nil {
		return err
	}
	_, err = c.Logical().WriteWithContext(ctx, mount+"/data/"+path, map[string]any{
		"options": map[string]any{"cas": cas},
		"data":    data,
	})
	if err != nil {
		return fmt.Errorf("writing %s/%s with check-and-set on version %d: %w", mount, path, cas, err)
	}
	return nil
}

// RotateStaticRole asks Vault to rotate a static database role now.
func (v *Vault) RotateStaticRole(ctx context.Context, mount, role string) error {
	c, err := v.client(ctx)
	if err != nil {
		return err
	}
	_, err = c.Logical().WriteWithContext(ctx, mount+"/rotate-role/"+role, map[string]any{})
	return err
}
