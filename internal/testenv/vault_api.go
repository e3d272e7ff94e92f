package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	// VaultTestPolicy is the policy of tokens from [Vault.CreateToken] and [Vault.EnableAppRole]:
	// every capability on every path except sudo.
	VaultTestPolicy = "credswap-test-all"
	// VaultAppRoleMount is where [Vault.EnableAppRole] enables the approle auth method.
	VaultAppRoleMount = "approle"

	vaultTestPolicyHCL = `path "*" { capabilities = ["create", "read", "update", "delete", "list"] }`
)

// VaultError is a non-2xx answer of the Vault API.
type VaultError struct {
	Method     string
	Path       string   // as passed to Call, without /v1/
	StatusCode int      // HTTP status
	Errors     []string // Vault's "errors" array; may be empty (e.g. 404 of a missing secret)
}

// Error describes the request and Vault's answer.
func (e *VaultError) Error() string {
	msg := fmt.Sprintf("testenv: vault %s %s: %d %s", e.Method, e.Path, e.StatusCode, http.StatusText(e.StatusCode))
	if len(e.Errors) > 0 {
		msg += ": " + strings.Join(e.Errors, "; ")
	}
	return msg
}

// Call sends method (GET, POST, PUT, DELETE or LIST) to the API path (such as "sys/mounts/kv";
// a leading "/v1/" is optional) with token as X-Vault-Token ("" for none) and body, if not nil,
// encoded as JSON. A 2xx answer with a body is decoded into out when out is not nil; any other
// answer is returned as a *VaultError. Request bodies, which may hold secrets, never appear in
// errors.
func (v *Vault) Call(ctx context.Context, token, method, path string, body, out any) error {
	path = strings.TrimPrefix(strings.TrimPrefix(path, "/"), "v1/")
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("testenv: vault %s %s: encode body: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, v.Addr+"/v1/"+path, rd)
	if err != nil {
		return fmt.Errorf("testenv: vault %s %s: %w", method, path, err)
	}
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return fmt.Errorf("testenv: vault %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("testenv: vault %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		verr := &VaultError{Method: method, Path: path, StatusCode: resp.StatusCode}
		var e struct {
			Errors []string `json:"errors"`
		}
		if json.Unmarshal(data, &e) == nil {
			verr.Errors = e.Errors
		}
		return verr
	}
	if out != nil && len(bytes.TrimSpace(data)) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("testenv: vault %s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

// Do is [Vault.Call] with the root token and the test's context, failing the test on error.
func (v *Vault) Do(t testing.TB, method, path string, body, out any) {
	t.Helper()
	if err := v.Call(t.Context(), v.Token, method, path, body, out); err != nil {
		t.Fatal(err)
	}
}

// cleanupCall runs a request at cleanup, when t.Context() is already canceled, and reports a
// failure with t.Error. It does nothing when the server is stopped or paused.
func (v *Vault) cleanupCall(t testing.TB, method, path string, body any) {
	t.Helper()
	if !v.reachable() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if err := v.Call(ctx, v.Token, method, path, body, nil); err != nil && v.reachable() {
		t.Error(err)
	}
}

// UniqueMount returns a mount name (or any path segment) starting with prefix and unique to this
// call, for tests that share a server.
func (v *Vault) UniqueMount(t testing.TB, prefix string) string {
	t.Helper()
	name, err := uniqueName(prefix)
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// vaultSecret is the envelope of Vault answers.
type vaultSecret[T any] struct {
	LeaseID       string     `json:"lease_id"`
	LeaseDuration int        `json:"lease_duration"`
	Renewable     bool       `json:"renewable"`
	Data          T          `json:"data"`
	Auth          *vaultAuth `json:"auth"`
}

type vaultAuth struct {
	ClientToken   string   `json:"client_token"`
	Accessor      string   `json:"accessor"`
	Policies      []string `json:"policies"`
	LeaseDuration int      `json:"lease_duration"`
	Renewable     bool     `json:"renewable"`
}

// seconds renders d as whole seconds (rounded up), the form Vault takes for TTLs.
func seconds(d time.Duration) string {
	return strconv.FormatInt(int64(math.Ceil(d.Seconds())), 10) + "s"
}

// EnableKV2 mounts a KV version 2 engine at mount, waits until it serves requests, and unmounts
// it (deleting its data) at cleanup. The dev server already has one at "secret/".
func (v *Vault) EnableKV2(t testing.TB, mount string) {
	t.Helper()
	v.Do(t, http.MethodPost, "sys/mounts/"+mount, map[string]any{
		"type":    "kv",
		"options": map[string]string{"version": "2"},
	}, nil)
	t.Cleanup(func() { v.cleanupCall(t, http.MethodDelete, "sys/mounts/"+mount, nil) })
	// A new KV v2 mount runs an upgrade check in the background and answers 400 "Upgrading from
	// non-versioned to versioned data" until it is done; its config endpoint answers when ready.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := v.Call(ctx, v.Token, http.MethodGet, mount+"/config", nil, nil)
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("testenv: KV v2 mount %s not ready: %v", mount, err)
		case <-tick.C:
		}
	}
}

// KVPut writes data as a new version of the secret at path in the KV v2 engine at mount and
// returns that version (1 for a new secret).
func (v *Vault) KVPut(t testing.TB, mount, path string, data map[string]any) (version int) {
	t.Helper()
	var resp vaultSecret[struct {
		Version int `json:"version"`
	}]
	v.Do(t, http.MethodPost, mount+"/data/"+path, map[string]any{"data": data}, &resp)
	if resp.Data.Version == 0 {
		t.Fatalf("testenv: vault KV put %s/%s: no version in the answer", mount, path)
	}
	return resp.Data.Version
}

// KVGet reads the current version of the secret at path in the KV v2 engine at mount.
func (v *Vault) KVGet(t testing.TB, mount, path string) (data map[string]any, version int) {
	t.Helper()
	var resp vaultSecret[struct {
		Data     map[string]any `json:"data"`
		Metadata struct {
			Version int `json:"version"`
		} `json:"metadata"`
	}]
	v.Do(t, http.MethodGet, mount+"/data/"+path, nil, &resp)
	return resp.Data.Data, resp.Data.Metadata.Version
}

// EnableDatabase mounts the database secrets engine at mount and unmounts it at cleanup, which
// revokes its outstanding leases (dropping their users) and closes its database connections.
func (v *Vault) EnableDatabase(t testing.TB, mount string) {
	t.Helper()
	v.Do(t, http.MethodPost, "sys/mounts/"+mount, map[string]any{"type": "database"}, nil)
	t.Cleanup(func() { v.cleanupCall(t, http.MethodDelete, "sys/mounts/"+mount, nil) })
}

// ConfigurePostgres adds the connection name to the database engine at mount: the
// postgresql-database-plugin logging in as pg's superuser (scram-sha-256 over TCP, without TLS)
// to the database "postgres" at pg's address. Vault checks the connection at once. allowedRoles
// are the dynamic and static roles that may use it; none means all ("*").
func (v *Vault) ConfigurePostgres(t testing.TB, mount, name string, pg *Postgres, allowedRoles ...string) {
	t.Helper()
	if len(allowedRoles) == 0 {
		allowedRoles = []string{"*"}
	}
	v.Do(t, http.MethodPost, mount+"/config/"+name, map[string]any{
		"plugin_name":       "postgresql-database-plugin",
		"connection_url":    fmt.Sprintf("postgresql://{{username}}:{{password}}@%s/postgres?sslmode=disable", pg.Addr()),
		"username":          pg.SuperUser,
		"password":          pg.SuperPassword,
		"allowed_roles":     allowedRoles,
		"verify_connection": true,
	}, nil)
}

// Statements of the roles made by CreateDynamicRole and CreateStaticRole. Vault splits each on
// ";" and runs them in one transaction on its connection to the database "postgres".
func dynamicRoleCreation() []string {
	return []string{
		`CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';` +
			` GRANT pg_read_all_data, pg_write_all_data TO "{{name}}";`,
	}
}

func dynamicRoleRevocation() []string {
	return []string{
		`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{{name}}';` +
			` DROP ROLE IF EXISTS "{{name}}";`,
	}
}

func staticRoleRotation() []string {
	return []string{`ALTER ROLE "{{name}}" WITH PASSWORD '{{password}}';`}
}

// CreateDynamicRole creates the dynamic role named role in the database engine at mount, using
// the connection dbName, with the given lease TTLs. Each credential is a new PostgreSQL role:
//
//	CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';
//	GRANT pg_read_all_data, pg_write_all_data TO "{{name}}";
//
// so it can log in to every database (CONNECT and TEMPORARY are PUBLIC's by default) and read and
// write every table, but not create objects in schema public (PostgreSQL 15 took CREATE from
// PUBLIC; grant it in the test database if a test needs it). The predefined roles need
// PostgreSQL 14 or newer. Revoking the lease (or unmounting) runs:
//
//	SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{{name}}';
//	DROP ROLE IF EXISTS "{{name}}";
//
// which ends the user's sessions, so a test sees connections that outlive their credential's
// revocation die. DROP ROLE fails if the user still owns objects or holds privileges granted
// outside the role memberships above: drop those before the lease is revoked.
func (v *Vault) CreateDynamicRole(t testing.TB, mount, role, dbName string, defaultTTL, maxTTL time.Duration) {
	t.Helper()
	v.Do(t, http.MethodPost, mount+"/roles/"+role, map[string]any{
		"db_name":               dbName,
		"creation_statements":   dynamicRoleCreation(),
		"revocation_statements": dynamicRoleRevocation(),
		"default_ttl":           seconds(defaultTTL),
		"max_ttl":               seconds(maxTTL),
	}, nil)
}

// CreateStaticRole creates the static role named role in the database engine at mount, managing
// the existing PostgreSQL user username through the connection dbName. Vault sets a new password
// at once (the user's old password stops working) and again every rotationPeriod (at least 5 s)
// and on POST mount/rotate-role/role, with
//
//	ALTER ROLE "{{name}}" WITH PASSWORD '{{password}}';
//
// Deleting the role (or unmounting) leaves the user and its last password in place.
func (v *Vault) CreateStaticRole(t testing.TB, mount, role, dbName, username string, rotationPeriod time.Duration) {
	t.Helper()
	v.Do(t, http.MethodPost, mount+"/static-roles/"+role, map[string]any{
		"db_name":             dbName,
		"username":            username,
		"rotation_period":     seconds(rotationPeriod),
		"rotation_statements": staticRoleRotation(),
	}, nil)
}

// VaultDBCreds is a credential issued by the database secrets engine.
type VaultDBCreds struct {
	Username string
	Password string
	// LeaseID and LeaseDuration are set for dynamic credentials only.
	LeaseID       string
	LeaseDuration time.Duration
	// LastRotation is set for static credentials only: when Vault last set the password.
	LastRotation time.Time
}

// DynamicCreds issues a new credential of the dynamic role in the database engine at mount
// (GET mount/creds/role), username and password from one answer.
func (v *Vault) DynamicCreds(t testing.TB, mount, role string) VaultDBCreds {
	t.Helper()
	var resp vaultSecret[struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}]
	v.Do(t, http.MethodGet, mount+"/creds/"+role, nil, &resp)
	if resp.Data.Username == "" || resp.LeaseID == "" {
		t.Fatalf("testenv: vault %s/creds/%s: answer without username or lease", mount, role)
	}
	return VaultDBCreds{
		Username:      resp.Data.Username,
		Password:      resp.Data.Password,
		LeaseID:       resp.LeaseID,
		LeaseDuration: time.Duration(resp.LeaseDuration) * time.Second,
	}
}

// StaticCreds reads the current credential of the static role in the database engine at mount
// (GET mount/static-creds/role).
func (v *Vault) StaticCreds(t testing.TB, mount, role string) VaultDBCreds {
	t.Helper()
	var resp vaultSecret[struct {
		Username     string    `json:"username"`
		Password     string    `json:"password"`
		LastRotation time.Time `json:"last_vault_rotation"`
	}]
	v.Do(t, http.MethodGet, mount+"/static-creds/"+role, nil, &resp)
	return VaultDBCreds{Username: resp.Data.Username, Password: resp.Data.Password, LastRotation: resp.Data.LastRotation}
}

// RevokeLease revokes a lease and waits until its revocation has run (PUT sys/leases/revoke).
func (v *Vault) RevokeLease(t testing.TB, leaseID string) {
	t.Helper()
	v.Do(t, http.MethodPut, "sys/leases/revoke", map[string]any{"lease_id": leaseID, "sync": true}, nil)
}

// ensureTestAuth writes VaultTestPolicy and enables the approle auth method at
// VaultAppRoleMount, once per server; both stay until the server stops.
func (v *Vault) ensureTestAuth(t testing.TB) {
	t.Helper()
	v.setupMu.Lock()
	defer v.setupMu.Unlock()
	if v.setupDone {
		return
	}
	v.Do(t, http.MethodPut, "sys/policy/"+VaultTestPolicy, map[string]any{"policy": vaultTestPolicyHCL}, nil)
	var mounts map[string]any
	v.Do(t, http.MethodGet, "sys/auth", nil, &mounts)
	if _, ok := mounts[VaultAppRoleMount+"/"]; !ok {
		v.Do(t, http.MethodPost, "sys/auth/"+VaultAppRoleMount, map[string]any{"type": "approle"}, nil)
	}
	v.setupDone = true
}

// EnableAppRole makes sure the approle auth method is enabled at "approle" (VaultAppRoleMount)
// and creates a role of its own there, deleted at cleanup, whose tokens have VaultTestPolicy
// (create, read, update, delete and list on every path) and a TTL of one hour. It returns the
// role's role_id and a new secret_id, for POST auth/approle/login.
func (v *Vault) EnableAppRole(t testing.TB) (roleID, secretID string) {
	t.Helper()
	v.ensureTestAuth(t)
	role := v.UniqueMount(t, "role")
	base := "auth/" + VaultAppRoleMount + "/role/" + role
	v.Do(t, http.MethodPost, base, map[string]any{
		"token_policies": []string{VaultTestPolicy},
		"token_ttl":      "1h",
		"token_max_ttl":  "4h",
	}, nil)
	t.Cleanup(func() { v.cleanupCall(t, http.MethodDelete, base, nil) })
	var idResp vaultSecret[struct {
		RoleID string `json:"role_id"`
	}]
	v.Do(t, http.MethodGet, base+"/role-id", nil, &idResp)
	var secretResp vaultSecret[struct {
		SecretID string `json:"secret_id"`
	}]
	v.Do(t, http.MethodPost, base+"/secret-id", map[string]any{}, &secretResp)
	if idResp.Data.RoleID == "" || secretResp.Data.SecretID == "" {
		t.Fatalf("testenv: vault approle %s: empty role_id or secret_id", role)
	}
	return idResp.Data.RoleID, secretResp.Data.SecretID
}

// CreateToken creates a token with VaultTestPolicy (plus "default"), the given TTL (whole
// seconds, rounded up) and renewability, and revokes it at cleanup. It is a child of the root
// token, so its renewals are bounded only by the system max TTL (32 days).
func (v *Vault) CreateToken(t testing.TB, ttl time.Duration, renewable bool) string {
	t.Helper()
	v.ensureTestAuth(t)
	var resp vaultSecret[json.RawMessage]
	v.Do(t, http.MethodPost, "auth/token/create", map[string]any{
		"policies":     []string{VaultTestPolicy},
		"ttl":          seconds(ttl),
		"renewable":    renewable,
		"display_name": "credswap-test",
	}, &resp)
	if resp.Auth == nil || resp.Auth.ClientToken == "" {
		t.Fatal("testenv: vault token create: answer without a token")
	}
	token := resp.Auth.ClientToken
	t.Cleanup(func() { v.cleanupCall(t, http.MethodPost, "auth/token/revoke", map[string]any{"token": token}) })
	return token
}

// IsVaultStatus reports whether err is a *VaultError with one of the given HTTP statuses.
func IsVaultStatus(err error, status ...int) bool {
	var verr *VaultError
	return errors.As(err, &verr) && slices.Contains(status, verr.StatusCode)
}
