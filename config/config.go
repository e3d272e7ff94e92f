package config

import "time"

// Config is the whole configuration file. Load and Parse return it with
// defaults applied and every value validated.
type Config struct {
	// Admin is the HTTP admin listener.
	Admin Admin `yaml:"admin"`
	// Backends are the proxied databases; at least one is required.
	Backends []Backend `yaml:"backends"`
	// ShutdownTimeout is how long SIGTERM/SIGINT waits for client sessions
	// to end before closing them with an error.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
	// Log configures the process logger.
	Log Log `yaml:"log"`
	// Vault is the Vault server shared by vault-kv and vault-db sources.
	Vault Vault `yaml:"vault"`
	// Limits bound what the sessions of all backends together may use.
	Limits ProcessLimits `yaml:"limits"`
}

// ProcessLimits bound what the client sessions of all backends together
// may use (each backend's own limits are Backend.Limits).
type ProcessLimits struct {
	// MaxPartialMessageMemory bounds the memory all sessions together hold
	// in client messages that have not arrived whole and that the relay
	// reads whole (PostgreSQL Query and Parse, a MySQL command's first
	// frame); beyond it sessions stop being read until memory is free. It
	// must be at least every backend's limits.max_message_size.
	MaxPartialMessageMemory ByteSize `yaml:"max_partial_message_memory"`
	// PartialMessageMemoryWait is how long a session may wait for that
	// memory before it is ended with an out-of-memory error.
	PartialMessageMemoryWait Duration `yaml:"partial_message_memory_wait"`
}

// Vault configures the client of the HashiCorp Vault server that vault-kv
// and vault-db credential sources read from.
type Vault struct {
	// Address is the server's URL, such as https://vault.internal:8200.
	Address string `yaml:"address"`
	// CAFile is a PEM bundle to verify the server with (default: system roots).
	CAFile string `yaml:"ca_file"`
	// Namespace is the Vault Enterprise namespace, if any.
	Namespace string `yaml:"namespace"`
	// Timeout bounds one request to Vault.
	Timeout Duration `yaml:"timeout"`
	// Auth says how the proxy logs in to Vault.
	Auth VaultAuth `yaml:"auth"`
	// AllowInsecureHTTP accepts an http:// Address on a host that is not
	// loopback; the Vault token and every secret then cross the network
	// in plaintext.
	AllowInsecureHTTP bool `yaml:"allow_insecure_http"`
}

// Enabled reports whether a Vault server is configured.
func (v Vault) Enabled() bool { return v.Address != "" }

// VaultAuth selects and configures the Vault login.
type VaultAuth struct {
	// Method is token, token_file or approle.
	Method string `yaml:"method"`
	// Token is the token itself (method token), typically "${VAULT_TOKEN}".
	Token string `yaml:"token"`
	// Path is the token file (method token_file), e.g. a Vault Agent sink;
	// it is read again whenever it changes.
	Path string `yaml:"path"`
	// Mount is the AppRole auth mount (method approle, default approle).
	Mount string `yaml:"mount"`
	// RoleID and SecretIDFile are the AppRole login (method approle).
	RoleID       string `yaml:"role_id"`
	SecretIDFile string `yaml:"secret_id_file"`
}

// Admin configures the admin HTTP API.
type Admin struct {
	// Listen is host:port of the admin API. It must be a loopback address
	// unless TokenFile is set.
	Listen string `yaml:"listen"`
	// TokenFile holds the bearer token required on /v1/*; empty disables
	// the check (loopback only).
	TokenFile string `yaml:"token_file"`
	// AllowedHosts are further host names (or IP addresses) that requests
	// to /v1/* may name in their Host header, besides loopback names and
	// addresses, the listen address and the address a connection arrived
	// on. Other names are refused, against DNS rebinding (docs/security.md).
	AllowedHosts []string `yaml:"allowed_hosts"`
	// MaxConnections caps the admin API's open connections; more wait
	// until one closes.
	MaxConnections int `yaml:"max_connections"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is json or console.
	Format string `yaml:"format"`
}

// Backend is one proxied database: a local listener and the upstream it
// forwards to.
type Backend struct {
	// Name identifies the backend in the admin API, metrics and logs;
	// it matches [a-z0-9-]+ and is unique.
	Name string `yaml:"name"`
	// Protocol is "postgres" or "mysql".
	Protocol string `yaml:"protocol"`
	// Listen is the host:port clients connect to.
	Listen string `yaml:"listen"`
	// Upstream is the database's host:port.
	Upstream string `yaml:"upstream"`
	// UpstreamTLS is how the proxy secures its connections to Upstream.
	UpstreamTLS UpstreamTLS `yaml:"upstream_tls"`
	// UpstreamAuth says which password exchanges the proxy's logins to
	// Upstream take part in. PostgreSQL: scram-sha-256, md5 (SCRAM or
	// md5) or any (also the cleartext password). MySQL: scramble
	// (scrambles, and full authentication only to
	// UpstreamRSAPublicKeyFile) or any (also mysql_clear_password and the
	// server's own RSA key). Default any with upstream_tls.mode
	// verify-full, scram-sha-256 or scramble otherwise (docs/security.md).
	UpstreamAuth string `yaml:"upstream_auth"`
	// UpstreamRSAPublicKeyFile is the MySQL server's RSA public key
	// (PEM): with upstream_auth scramble, caching_sha2_password full
	// authentication and sha256_password encrypt the password to this key
	// and to no other.
	UpstreamRSAPublicKeyFile string `yaml:"upstream_rsa_public_key_file"`
	// ClientTLS is the certificate offered to clients; empty disables TLS
	// towards clients.
	ClientTLS ClientTLS `yaml:"client_tls"`
	// Clients are the local logins applications use; they never rotate.
	Clients []Client `yaml:"clients"`
	// Credential says where the backend credential comes from.
	Credential Credential `yaml:"credential"`
	// VerifyDatabase is the database a test login connects to (PostgreSQL
	// only; default "postgres").
	VerifyDatabase string `yaml:"verify_database"`
	// DrainDeadline bounds how long sessions may stay on a replaced
	// credential before OnDeadline applies.
	DrainDeadline Duration `yaml:"drain_deadline"`
	// OnDeadline is "keep" or "close".
	OnDeadline string `yaml:"on_deadline"`
	// DrainConnectionBudget is the most backend connections a drain holds
	// beyond one per session at any moment (pre-dialed spares and switches
	// in flight).
	DrainConnectionBudget int `yaml:"drain_connection_budget"`
	// Limits bound what one client and all clients together may use.
	Limits Limits `yaml:"limits"`
	// Pool configures idle backend connections kept for reuse.
	Pool Pool `yaml:"pool"`
	// Rotation configures password rotation run by the proxy (optional).
	Rotation Rotation `yaml:"rotation"`
	// LocalInfile controls LOAD DATA LOCAL INFILE (protocol mysql only).
	LocalInfile LocalInfile `yaml:"local_infile"`
}

// LocalInfile controls LOAD DATA LOCAL INFILE through a mysql backend.
type LocalInfile struct {
	// Allow negotiates LOCAL_FILES with clients that ask for it (and with
	// the database for them); otherwise the database refuses the
	// statement with its own error. Default false.
	Allow bool `yaml:"allow"`
}

// Rotation configures how the proxy rotates the backend password itself.
type Rotation struct {
	// Strategy is alternating-users, single-user, vault-static or
	// dual-password (MySQL and MariaDB only); empty disables rotation.
	Strategy string `yaml:"strategy"`
	// Users are the two logins alternating-users switches between.
	Users []string `yaml:"users"`
	// AdminCredential is a login allowed to change the users' passwords
	// (source file, env or vault-kv). single-user may leave it out: the
	// user then changes its own password.
	AdminCredential Credential `yaml:"admin_credential"`
	// Publish says where the new credential is written for every proxy
	// to read.
	Publish Publish `yaml:"publish"`
	// Schedule runs rotations periodically.
	Schedule Schedule `yaml:"schedule"`
	// Password shapes generated passwords.
	Password PasswordPolicy `yaml:"password"`
	// Grace is how long retire waits after this proxy has drained, for
	// other proxies reading the same published credential.
	Grace Duration `yaml:"grace"`
	// FleetDeadline bounds how long retire waits for the database to show
	// no session of the old user other than this proxy's (alternating-
	// users): other proxies that learn the credential late still move
	// their sessions. Default: the credential's refresh_interval plus
	// drain_deadline. When it passes the old user is locked and its
	// remaining sessions are left running.
	FleetDeadline Duration `yaml:"fleet_deadline"`
	// Journal is the file recording rotations in progress (default:
	// credswap-<backend>.rotation.json beside the configuration file).
	Journal string `yaml:"journal"`
}

// Enabled reports whether a rotation strategy is configured.
func (r Rotation) Enabled() bool { return r.Strategy != "" }

// Publish selects where a rotation publishes the new credential.
type Publish struct {
	// To is file (replace credential.path atomically), vault-kv (the
	// credential's KV v2 secret, with check-and-set) or none.
	To string `yaml:"to"`
}

// Schedule configures periodic rotation.
type Schedule struct {
	Enabled  bool     `yaml:"enabled"`
	Interval Duration `yaml:"interval"`
}

// PasswordPolicy shapes generated passwords.
type PasswordPolicy struct {
	// Length is the number of characters (16 to 128, default 32).
	Length int `yaml:"length"`
	// Alphabet lists the characters to draw from (default letters and digits).
	Alphabet string `yaml:"alphabet"`
}

// UpstreamTLS configures TLS from the proxy to the database.
type UpstreamTLS struct {
	// Mode is disable, require, verify-ca or verify-full.
	Mode string `yaml:"mode"`
	// CAFile is a PEM bundle used by verify-ca and verify-full.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are an optional client certificate.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name checked by verify-full (default: the
	// host part of Upstream).
	ServerName string `yaml:"server_name"`
}

// ClientTLS configures TLS between clients and the proxy.
type ClientTLS struct {
	// CertFile and KeyFile are the proxy's PEM certificate and key.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// Required refuses clients that do not negotiate TLS.
	Required bool `yaml:"required"`
}

// Enabled reports whether a certificate is configured.
func (t ClientTLS) Enabled() bool { return t.CertFile != "" }

// Client is one local login. Exactly one of PasswordFile, PasswordHash and
// Password is set.
type Client struct {
	// User is the user name the application logs in with.
	User string `yaml:"user"`
	// PasswordFile holds the password (trailing newline ignored).
	PasswordFile string `yaml:"password_file"`
	// PasswordHash is a PostgreSQL verifier: "SCRAM-SHA-256$<iter>:<salt>$<stored>:<server>"
	// or "md5<32 hex digits>" (md5(password || user)). Not used by
	// protocol mysql.
	PasswordHash string `yaml:"password_hash"`
	// Password is the password inline, typically "${ENV_VAR}".
	Password string `yaml:"password"`
	// Auth is the method the proxy asks this client for. PostgreSQL:
	// scram-sha-256 (default), md5, or password (cleartext, only over
	// TLS). MySQL: caching_sha2_password (default) or
	// mysql_native_password.
	Auth string `yaml:"auth"`
}

// Credential selects and configures the backend credential source.
type Credential struct {
	// Source is "file", "env", "vault-kv" or "vault-db".
	Source string `yaml:"source"`
	// Path is the JSON file {"username": ..., "password": ...} or a
	// directory holding files "username" and "password" (source file), or
	// the secret's path under Mount (source vault-kv).
	Path string `yaml:"path"`
	// Mount is the Vault secrets engine's mount (vault-kv default secret,
	// vault-db default database).
	Mount string `yaml:"mount"`
	// KVVersion is the KV engine version, 1 or 2 (vault-kv, default 2).
	KVVersion int `yaml:"kv_version"`
	// UsernameKey and PasswordKey name the secret's fields (vault-kv,
	// defaults username and password).
	UsernameKey string `yaml:"username_key"`
	PasswordKey string `yaml:"password_key"`
	// Role is a dynamic database role (vault-db: database/creds/<role>).
	Role string `yaml:"role"`
	// StaticRole is a static database role (vault-db:
	// database/static-creds/<static_role>).
	StaticRole string `yaml:"static_role"`
	// UsernameEnv and PasswordEnv name the environment variables (source env).
	UsernameEnv string `yaml:"username_env"`
	PasswordEnv string `yaml:"password_env"`
	// RefreshInterval is how often the source is re-read even without a
	// change notification.
	RefreshInterval Duration `yaml:"refresh_interval"`
}

// Limits bound resource use per backend.
type Limits struct {
	// MaxClientConns is the most client connections at once; more are
	// refused (PostgreSQL 53300).
	MaxClientConns int `yaml:"max_client_conns"`
	// MaxHandshakes is the most client connections that have not
	// authenticated yet; they hold no session slot. A connection beyond it
	// takes the place of the oldest handshake if that has been running for
	// 100 ms, else waits for a turn (as many may wait as may log in).
	MaxHandshakes int `yaml:"max_handshakes"`
	// MaxHandshakesPerSource is the same bound per client IP address
	// (0: none).
	MaxHandshakesPerSource int `yaml:"max_handshakes_per_source"`
	// HandshakeTimeout bounds TLS, startup and authentication of a client.
	HandshakeTimeout Duration `yaml:"handshake_timeout"`
	// ConnectTimeout is how long a client waits for a backend connection,
	// including retries after authentication failures.
	ConnectTimeout Duration `yaml:"connect_timeout"`
	// MaxMessageSize is the largest protocol message a client may send.
	MaxMessageSize ByteSize `yaml:"max_message_size"`
}

// Pool configures reuse of backend connections.
type Pool struct {
	// MaxIdle is the most idle backend connections kept (0 disables reuse).
	MaxIdle int `yaml:"max_idle"`
	// IdleTimeout closes idle connections unused this long.
	IdleTimeout Duration `yaml:"idle_timeout"`
}

// Duration is a time.Duration written as a Go duration string ("30s").
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// ByteSize is a size in bytes, written as an integer or with a unit
// ("64KiB", "16MiB", "1GiB", "512B").
type ByteSize int64
