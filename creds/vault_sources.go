package creds

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	vault "github.com/hashicorp/vault/api"
	"go.uber.org/zap"
)

// VaultKVSource reads the credential from a Vault KV secret (version 1 or
// 2). With KV v2 it polls the secret's metadata and reads the data only
// when the version changed.
type VaultKVSource struct {
	v                    *Vault
	mount, path          string
	kvVersion            int
	userKey, passwordKey string
	digest               versioner

	mu      sync.Mutex
	last    Credential
	lastVer int
}

// NewVaultKVSource returns a source for mount/path. usernameKey and
// passwordKey name the secret's fields.
func NewVaultKVSource(v *Vault, mount, path string, kvVersion int, usernameKey, passwordKey string) *VaultKVSource {
	return &VaultKVSource{v: v, mount: mount, path: path, kvVersion: kvVersion,
		userKey: usernameKey, passwordKey: passwordKey, digest: newVersioner()}
}

// Kind implements Source.
func (s *VaultKVSource) Kind() string { return "vault-kv" }

// Fetch implements Source.
func (s *VaultKVSource) Fetch(ctx context.Context) (Credential, error) {
	if s.kvVersion == 1 {
		sec, err := s.v.read(ctx, s.mount+"/"+s.path)
		if err != nil {
			return Credential{}, err
		}
		if sec == nil {
			return Credential{}, fmt.Errorf("no secret at %s/%s", s.mount, s.path)
		}
		c, err := s.credential(sec.Data)
		if err != nil {
			return Credential{}, err
		}
		c.Version = s.digest.version(c.Username, c.Password)
		return c, nil
	}
	meta, err := s.v.read(ctx, s.mount+"/metadata/"+s.path)
	if err != nil {
		return Credential{}, err
	}
	if meta == nil {
		return Credential{}, fmt.Errorf("no secret at %s/%s", s.mount, s.path)
	}
	ver, err := jsonInt(meta.Data["current_version"])
	if err != nil {
		return Credential{}, fmt.Errorf("secret metadata: current_version: %w", err)
	}
	s.mu.Lock()
	if ver == s.lastVer && !s.last.IsZero() {
		c := s.last
		s.mu.Unlock()
		return c, nil
	}
	s.mu.Unlock()
	sec, err := s.v.readVersion(ctx, s.mount+"/data/"+s.path, ver)
	if err != nil {
		return Credential{}, err
	}
	if sec == nil {
		return Credential{}, fmt.Errorf("version %d of %s/%s is deleted or destroyed", ver, s.mount, s.path)
	}
	data, _ := sec.Data["data"].(map[string]any)
	c, err := s.credential(data)
	if err != nil {
		return Credential{}, fmt.Errorf("version %d: %w", ver, err)
	}
	c.Version = "v" + strconv.Itoa(ver)
	s.mu.Lock()
	s.last, s.lastVer = c, ver
	s.mu.Unlock()
	return c, nil
}

func (s *VaultKVSource) credential(data map[string]any) (Credential, error) {
	user, err := stringField(data, s.userKey)
	if err != nil {
		return Credential{}, err
	}
	pw, err := stringField(data, s.passwordKey)
	if err != nil {
		return Credential{}, err
	}
	if user == "" {
		return Credential{}, fmt.Errorf("field %q is empty", s.userKey)
	}
	return Credential{Username: user, Password: pw, Source: "vault-kv"}, nil
}

// lease is one dynamic database credential and its Vault lease.
type lease struct {
	cred      Credential
	id        string
	renewable bool
	duration  time.Duration // the lease's TTL as issued
	expires   time.Time
	nextRenew time.Time
}

// VaultDynamicSource issues credentials from a Vault database role
// (mount/creds/role). Each credential is a database user with a lease. The
// source renews leases it still needs, asks for a new credential at two
// thirds of a lease's TTL (earlier when Vault stops extending it), and
// revokes the leases of credentials no session uses any more (Retire).
type VaultDynamicSource struct {
	v           *Vault
	mount, role string
	log         *zap.Logger

	mu      sync.Mutex
	cur     *lease
	old     map[string]*lease // issued earlier, not yet revoked
	due     bool              // a new credential is due
	changed func()
	kick    chan struct{}
}

// NewVaultDynamicSource returns a source for mount/creds/role.
func NewVaultDynamicSource(v *Vault, mount, role string, log *zap.Logger) *VaultDynamicSource {
	if log == nil {
		log = zap.NewNop()
	}
	return &VaultDynamicSource{v: v, mount: mount, role: role, log: log,
		old: map[string]*lease{}, kick: make(chan struct{}, 1)}
}

// Kind implements Source.
func (s *VaultDynamicSource) Kind() string { return "vault-db" }

// Fetch implements Source: the current credential, or a new one when none
// is held or the current one is due for replacement.
func (s *VaultDynamicSource) Fetch(ctx context.Context) (Credential, error) {
	s.mu.Lock()
	if s.cur != nil && !s.due {
		c := s.cur.cred
		s.mu.Unlock()
		return c, nil
	}
	s.mu.Unlock()
	sec, err := s.v.read(ctx, s.mount+"/creds/"+s.role)
	if err != nil {
		return Credential{}, err
	}
	if sec == nil {
		return Credential{}, fmt.Errorf("role %s/creds/%s returned nothing", s.mount, s.role)
	}
	// Username and password come from the same read: they belong to one lease.
	user, err := stringField(sec.Data, "username")
	if err != nil {
		return Credential{}, err
	}
	pw, err := stringField(sec.Data, "password")
	if err != nil {
		return Credential{}, err
	}
	now := time.Now()
	d := time.Duration(sec.LeaseDuration) * time.Second
	l := &lease{id: sec.LeaseID, renewable: sec.Renewable, duration: d, expires: now.Add(d), nextRenew: now.Add(d * 2 / 3)}
	l.cred = Credential{Username: user, Password: pw, Source: "vault-db", Version: sec.LeaseID, LeaseID: sec.LeaseID, Expiry: l.expires}
	s.mu.Lock()
	if s.cur != nil {
		s.old[s.cur.id] = s.cur
	}
	s.cur, s.due = l, false
	s.mu.Unlock()
	s.log.Info("vault issued a database credential", zap.String("username", user), zap.String("lease_id", sec.LeaseID),
		zap.Duration("ttl", d), zap.Bool("renewable", sec.Renewable))
	s.poke()
	return l.cred, nil
}

func (s *VaultDynamicSource) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Watch implements Watcher: it renews leases and announces when a new
// credential is due, until ctx ends.
func (s *VaultDynamicSource) Watch(ctx context.Context, changed func()) error {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		next := s.tick(ctx, changed)
		t.Reset(max(time.Until(next), 50*time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-s.kick:
		}
	}
}

// tick does what is due now and returns when to look again.
func (s *VaultDynamicSource) tick(ctx context.Context, changed func()) time.Time {
	now := time.Now()
	next := now.Add(time.Minute)
	s.mu.Lock()
	cur := s.cur
	var renew []*lease
	if cur != nil && !s.due && !now.Before(cur.nextRenew) {
		// Two thirds of the current lease's TTL have passed: a new
		// credential is due; keep the current one alive meanwhile.
		s.due = true
		renew = append(renew, cur)
	}
	for _, l := range s.old {
		if !now.Before(l.nextRenew) {
			renew = append(renew, l)
		}
	}
	due := s.due
	s.mu.Unlock()
	if due {
		changed()
	}
	for _, l := range renew {
		s.renew(ctx, l)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil && !s.due && s.cur.nextRenew.Before(next) {
		next = s.cur.nextRenew
	}
	for _, l := range s.old {
		if l.nextRenew.Before(next) {
			next = l.nextRenew
		}
	}
	if s.due {
		next = now.Add(time.Second) // announce again until a refresh fetched it
	}
	return next
}

// renew extends l while Vault allows it, so that sessions still on it
// keep a valid user until they have moved.
func (s *VaultDynamicSource) renew(ctx context.Context, l *lease) {
	c, err := s.v.client(ctx)
	var sec *vault.Secret
	if err == nil && l.renewable {
		rctx, cancel := context.WithTimeout(ctx, s.v.opts.Timeout)
		sec, err = c.Sys().RenewWithContext(rctx, l.id, int(l.duration/time.Second))
		cancel()
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil || sec == nil || !l.renewable {
		// Try again at half of what is left, but not past the expiry.
		l.nextRenew = now.Add(max(time.Until(l.expires)/2, time.Second))
		if err != nil {
			s.log.Warn("renewing a vault lease failed", zap.String("lease_id", l.id), zap.Error(err))
		}
		return
	}
	got := time.Duration(sec.LeaseDuration) * time.Second
	l.expires = now.Add(got)
	l.nextRenew = now.Add(got * 2 / 3)
	if got < l.duration*9/10 {
		s.log.Info("vault lease nears its max TTL", zap.String("lease_id", l.id), zap.Duration("left", got))
	}
}

// Retire implements Retirer: it revokes every lease except those of keep.
func (s *VaultDynamicSource) Retire(ctx context.Context, keep ...Credential) error {
	keepIDs := map[string]bool{}
	for _, k := range keep {
		keepIDs[k.LeaseID] = true
	}
	s.mu.Lock()
	var victims []*lease
	for id, l := range s.old {
		if !keepIDs[id] {
			victims = append(victims, l)
			delete(s.old, id)
		}
	}
	s.mu.Unlock()
	var errs []error
	for _, l := range victims {
		c, err := s.v.client(ctx)
		if err == nil {
			err = c.Sys().RevokeWithContext(ctx, l.id)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("revoking lease of %s: %w", l.cred.Username, err))
			s.mu.Lock()
			s.old[l.id] = l // try again at the next retirement
			s.mu.Unlock()
			continue
		}
		s.log.Info("revoked the lease of a retired database credential", zap.String("username", l.cred.Username), zap.String("lease_id", l.id))
	}
	return errors.Join(errs...)
}

// VaultStaticSource reads a Vault static database role
// (mount/static-creds/role), whose password Vault rotates itself. A
// rotation is adopted when the password's last rotation time changes; the
// next read is scheduled from the role's ttl.
type VaultStaticSource struct {
	v           *Vault
	mount, role string
	kick        chan struct{}

	mu   sync.Mutex
	next time.Time
}

// NewVaultStaticSource returns a source for mount/static-creds/role.
func NewVaultStaticSource(v *Vault, mount, role string) *VaultStaticSource {
	return &VaultStaticSource{v: v, mount: mount, role: role, kick: make(chan struct{}, 1)}
}

// Kind implements Source.
func (s *VaultStaticSource) Kind() string { return "vault-db" }

// Fetch implements Source.
func (s *VaultStaticSource) Fetch(ctx context.Context) (Credential, error) {
	sec, err := s.v.read(ctx, s.mount+"/static-creds/"+s.role)
	if err != nil {
		return Credential{}, err
	}
	if sec == nil {
		return Credential{}, fmt.Errorf("static role %s/static-creds/%s returned nothing", s.mount, s.role)
	}
	user, err := stringField(sec.Data, "username")
	if err != nil {
		return Credential{}, err
	}
	pw, err := stringField(sec.Data, "password")
	if err != nil {
		return Credential{}, err
	}
	rotated, _ := sec.Data["last_vault_rotation"].(string)
	ttl, _ := jsonInt(sec.Data["ttl"])
	c := Credential{Username: user, Password: pw, Source: "vault-db", Version: rotated}
	if ttl > 0 {
		c.Expiry = time.Now().Add(time.Duration(ttl) * time.Second)
		s.mu.Lock()
		s.next = c.Expiry.Add(time.Second) // read again just after Vault rotates
		s.mu.Unlock()
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	return c, nil
}

// Watch implements Watcher: it announces a change just after Vault's
// scheduled rotation of the static role.
func (s *VaultStaticSource) Watch(ctx context.Context, changed func()) error {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		s.mu.Lock()
		next := s.next
		s.mu.Unlock()
		if next.IsZero() {
			next = time.Now().Add(time.Hour)
		}
		t.Reset(max(time.Until(next), 100*time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-s.kick:
		case <-t.C:
			s.mu.Lock()
			fire := !s.next.IsZero() && !time.Now().Before(s.next)
			if fire {
				s.next = time.Time{}
			}
			s.mu.Unlock()
			if fire {
				changed()
			}
		}
	}
}

// jsonInt reads a number from Vault's JSON (json.Number or float64).
func jsonInt(v any) (int, error) {
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		return int(i), err
	case float64:
		return int(n), nil
	case int:
		return n, nil
	case nil:
		return 0, errors.New("missing")
	}
	return 0, fmt.Errorf("unexpected type %T", v)
}
