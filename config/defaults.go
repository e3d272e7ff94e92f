package config

import "time"

// DefaultAdminListen is the admin API address used when admin.listen is
// absent.
const DefaultAdminListen = "127.0.0.1:9649"

// DefaultAdminMaxConnections is admin.max_connections when absent.
const DefaultAdminMaxConnections = 64

// Defaults for absent fields. They are the only place defaults are written;
// doc.go lists them for users.
const (
	defaultShutdownTimeout = 30 * time.Second
	defaultLogLevel        = "info"
	defaultLogFormat       = "json"

	defaultUpstreamTLSMode  = tlsDisable
	defaultRefreshInterval  = 30 * time.Second
	defaultVerifyDatabase   = "postgres"
	defaultDrainDeadline    = 60 * time.Second
	defaultDrainBudget      = 8
	defaultOnDeadline       = "keep"
	defaultMaxClientConns   = 1000
	defaultMaxHandshakes    = 256
	defaultMaxHandshakesSrc = 32
	defaultHandshakeTimeout = 10 * time.Second
	defaultConnectTimeout   = 15 * time.Second
	defaultMaxMessageSize   = 64 * miB
	defaultPoolMaxIdle      = 16
	defaultPoolIdleTimeout  = 10 * time.Minute
	defaultClientAuth       = authSCRAM
	defaultMySQLClientAuth  = authCachingSHA2

	defaultMaxPartialMessageMemory  = 256 * miB
	defaultPartialMessageMemoryWait = 30 * time.Second

	defaultVaultTimeout = 10 * time.Second
	defaultAppRoleMount = "approle"
	defaultKVMount      = "secret"
	defaultDBMount      = "database"
	defaultKVVersion    = 2
	defaultUsernameKey  = "username"
	defaultPasswordKey  = "password"

	defaultPasswordLength   = 32
	defaultPasswordAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	defaultScheduleInterval = 24 * time.Hour
)

// applyDefaults fills every field of c that the document left out, as
// recorded in given. A field the document set is kept even when it is the
// zero value: pool.max_idle: 0 disables reuse, and an explicit "" or 0s is
// reported by validation rather than silently replaced.
func applyDefaults(c *Config, given fieldSet) {
	setDefault(given, &c.Admin.Listen, DefaultAdminListen)
	setDefault(given, &c.Admin.MaxConnections, DefaultAdminMaxConnections)
	if len(c.Admin.AllowedHosts) == 0 {
		c.Admin.AllowedHosts = nil // "allowed_hosts: []" and no key mean the same
	}
	setDefault(given, &c.ShutdownTimeout, Duration(defaultShutdownTimeout))
	setDefault(given, &c.Log.Level, defaultLogLevel)
	setDefault(given, &c.Log.Format, defaultLogFormat)
	if c.Vault.Enabled() {
		setDefault(given, &c.Vault.Timeout, Duration(defaultVaultTimeout))
		if c.Vault.Auth.Method == "approle" {
			setDefault(given, &c.Vault.Auth.Mount, defaultAppRoleMount)
		}
	}

	for i := range c.Backends {
		b := &c.Backends[i]
		setDefault(given, &b.UpstreamTLS.Mode, defaultUpstreamTLSMode)
		setDefault(given, &b.UpstreamAuth, defaultUpstreamAuth(b.Protocol, b.UpstreamTLS.Mode))
		setDefault(given, &b.Credential.RefreshInterval, Duration(defaultRefreshInterval))
		if b.Rotation.Enabled() {
			setDefault(given, &b.Rotation.FleetDeadline, b.Credential.RefreshInterval+b.DrainDeadline)
		}
		if len(b.Rotation.Users) == 0 {
			b.Rotation.Users = nil // "users: []" and no key mean the same
		}
		if r := &b.Rotation; r.Enabled() {
			setDefault(given, &r.Password.Length, defaultPasswordLength)
			setDefault(given, &r.Password.Alphabet, defaultPasswordAlphabet)
			setDefault(given, &r.Schedule.Interval, Duration(defaultScheduleInterval))
			setDefault(given, &r.Publish.To, defaultPublish(b.Credential.Source))
			setCredentialDefaults(given, &r.AdminCredential)
		}
		switch b.Credential.Source {
		case sourceVaultKV:
			setDefault(given, &b.Credential.Mount, defaultKVMount)
			setDefault(given, &b.Credential.KVVersion, defaultKVVersion)
			setDefault(given, &b.Credential.UsernameKey, defaultUsernameKey)
			setDefault(given, &b.Credential.PasswordKey, defaultPasswordKey)
		case sourceVaultDB:
			setDefault(given, &b.Credential.Mount, defaultDBMount)
		}
		if b.Protocol == protocolPostgres {
			setDefault(given, &b.VerifyDatabase, defaultVerifyDatabase)
		}
		setDefault(given, &b.DrainDeadline, Duration(defaultDrainDeadline))
		setDefault(given, &b.OnDeadline, defaultOnDeadline)
		setDefault(given, &b.DrainConnectionBudget, defaultDrainBudget)
		setDefault(given, &b.Limits.MaxClientConns, defaultMaxClientConns)
		setDefault(given, &b.Limits.MaxHandshakes, defaultMaxHandshakes)
		setDefault(given, &b.Limits.MaxHandshakesPerSource, defaultMaxHandshakesSrc)
		setDefault(given, &b.Limits.HandshakeTimeout, Duration(defaultHandshakeTimeout))
		setDefault(given, &b.Limits.ConnectTimeout, Duration(defaultConnectTimeout))
		setDefault(given, &b.Limits.MaxMessageSize, ByteSize(defaultMaxMessageSize))
		setDefault(given, &b.Pool.MaxIdle, defaultPoolMaxIdle)
		setDefault(given, &b.Pool.IdleTimeout, Duration(defaultPoolIdleTimeout))
		clientAuth := defaultClientAuth
		if b.Protocol == protocolMySQL {
			clientAuth = defaultMySQLClientAuth
		}
		for j := range b.Clients {
			setDefault(given, &b.Clients[j].Auth, clientAuth)
		}
	}
	// The memory for partial messages holds at least one message of the
	// largest size a backend accepts.
	partial := ByteSize(defaultMaxPartialMessageMemory)
	for i := range c.Backends {
		partial = max(partial, c.Backends[i].Limits.MaxMessageSize)
	}
	setDefault(given, &c.Limits.MaxPartialMessageMemory, partial)
	setDefault(given, &c.Limits.PartialMessageMemoryWait, Duration(defaultPartialMessageMemoryWait))
}

// setDefault stores v in *p unless the document set *p.
func setDefault[T any](given fieldSet, p *T, v T) {
	if !given.has(p) {
		*p = v
	}
}

// defaultPublish is where a rotation publishes by default: back to the
// file or KV secret the credential is read from, nowhere otherwise.
func defaultPublish(source string) string {
	switch source {
	case sourceFile:
		return "file"
	case sourceVaultKV:
		return sourceVaultKV
	}
	return "none"
}

// defaultUpstreamAuth is upstream_auth when absent: whatever the server
// asks for when TLS has verified that it is the database (verify-full),
// otherwise only exchanges that do not hand the password to whoever
// answers on the upstream address (docs/security.md). verify-ca does not
// count: any certificate of the CA passes, whoever holds it.
func defaultUpstreamAuth(protocol, tlsMode string) string {
	switch {
	case tlsMode == tlsVerifyFull:
		return upstreamAuthAny
	case protocol == protocolMySQL:
		return upstreamAuthScramble
	}
	return authSCRAM
}

// setCredentialDefaults fills the defaults of an admin credential.
func setCredentialDefaults(given fieldSet, c *Credential) {
	if c.Source == "" {
		return
	}
	setDefault(given, &c.RefreshInterval, Duration(defaultRefreshInterval))
	if c.Source == sourceVaultKV {
		setDefault(given, &c.Mount, defaultKVMount)
		setDefault(given, &c.KVVersion, defaultKVVersion)
		setDefault(given, &c.UsernameKey, defaultUsernameKey)
		setDefault(given, &c.PasswordKey, defaultPasswordKey)
	}
}
