package config

import (
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Values of the enumerated fields.
const (
	protocolPostgres = "postgres"
	protocolMySQL    = "mysql"

	tlsDisable    = "disable"
	tlsRequire    = "require"
	tlsVerifyCA   = "verify-ca"
	tlsVerifyFull = "verify-full"

	authSCRAM    = "scram-sha-256"
	authMD5      = "md5"
	authPassword = "password"

	authCachingSHA2 = "caching_sha2_password"
	authNative      = "mysql_native_password"

	// upstream_auth: authSCRAM and authMD5 (postgres), or these.
	upstreamAuthAny      = "any"
	upstreamAuthScramble = "scramble" // mysql

	sourceFile    = "file"
	sourceEnv     = "env"
	sourceVaultKV = "vault-kv"
	sourceVaultDB = "vault-db"

	onDeadlineKeep  = "keep"
	onDeadlineClose = "close"
)

// Bounds of limits.max_message_size, and the largest
// limits.max_partial_message_memory.
const (
	minMessageSize          = kiB
	maxMessageSize          = giB
	maxPartialMessageMemory = 64 * giB
)

// validator checks a decoded Config with defaults applied. Its messages
// describe what is expected and never quote a configured value, so that no
// secret ends up in an error.
type validator struct {
	given fieldSet
	errs  *issues
}

// validate records every problem of c in errs.
func validate(c *Config, given fieldSet, errs *issues) {
	v := &validator{given: given, errs: errs}
	adminAddr := v.admin(&c.Admin)
	v.positive("shutdown_timeout", v.line(&c.ShutdownTimeout), c.ShutdownTimeout)
	v.oneOf("log.level", v.line(&c.Log.Level, &c.Log), c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", v.line(&c.Log.Format, &c.Log), c.Log.Format, "json", "console")

	if len(c.Backends) == 0 {
		v.bad("backends", v.line(&c.Backends), "at least one backend is required")
	}
	v.processLimits(&c.Limits, c.Backends)
	for i := range c.Backends {
		if s := c.Backends[i].Credential.Source; s == sourceVaultKV || s == sourceVaultDB {
			if !c.Vault.Enabled() {
				v.bad(indexPath("backends", i)+".credential.source", v.line(&c.Backends[i].Credential.Source, &c.Backends[i]),
					"source %s needs the vault block (vault.address and vault.auth)", s)
			}
		}
	}
	if c.Vault.Enabled() {
		v.vault(&c.Vault)
	}
	names := map[string]string{} // name -> path of the backend that has it
	var listens []boundAddr
	if adminAddr.port != 0 {
		listens = append(listens, adminAddr)
	}
	for i := range c.Backends {
		b := &c.Backends[i]
		p := indexPath("backends", i)
		v.backend(p, b)

		if b.Name != "" {
			if other, dup := names[b.Name]; dup {
				v.bad(p+".name", v.line(&b.Name, b), "duplicate backend name (also used by %s)", other)
			} else {
				names[b.Name] = p
			}
		}
		if a, ok := parseBound(p+".listen", b.Listen); ok && a.port != 0 {
			for _, other := range listens {
				if a.overlaps(other) {
					v.bad(a.path, v.line(&b.Listen, b), "address already used by %s", other.path)
					break
				}
			}
			listens = append(listens, a)
		}
	}
}

// line returns the line of the first of ps the document set, or 0.
func (v *validator) line(ps ...any) int { return v.given.line(ps...) }

// bad records a problem at path.
func (v *validator) bad(path string, line int, format string, args ...any) {
	v.errs.addf(path, line, format, args...)
}

// processLimits checks the top-level limits. The memory for partial
// messages must hold a message of every backend's max_message_size, or
// such a message could never be received.
func (v *validator) processLimits(l *ProcessLimits, backends []Backend) {
	at := func(field any) int { return v.line(field, l) }
	largest := ByteSize(0)
	for i := range backends {
		largest = max(largest, backends[i].Limits.MaxMessageSize)
	}
	switch {
	case l.MaxPartialMessageMemory < minMessageSize || l.MaxPartialMessageMemory > maxPartialMessageMemory:
		v.bad("limits.max_partial_message_memory", at(&l.MaxPartialMessageMemory), "must be between 1KiB and 64GiB")
	case l.MaxPartialMessageMemory < largest:
		v.bad("limits.max_partial_message_memory", at(&l.MaxPartialMessageMemory),
			"must be at least the largest limits.max_message_size of the backends")
	}
	v.positive("limits.partial_message_memory_wait", at(&l.PartialMessageMemoryWait), l.PartialMessageMemoryWait)
}

// admin checks the admin section and returns its listen address for the
// overlap check.
func (v *validator) admin(a *Admin) boundAddr {
	line := v.line(&a.Listen, a)
	host, port, problem := splitHostPort(a.Listen, true, false)
	if problem != "" {
		v.bad("admin.listen", line, "%s", problem)
		return boundAddr{}
	}
	if a.TokenFile == "" && !isLoopback(host) {
		v.bad("admin.listen", line, "must be a loopback address (127.0.0.1, ::1 or localhost) unless admin.token_file is set")
	}
	if a.MaxConnections < 1 {
		v.bad("admin.max_connections", v.line(&a.MaxConnections, a), "must be at least 1")
	}
	for i, h := range a.AllowedHosts {
		if problem := allowedHostProblem(h); problem != "" {
			v.bad(indexPath("admin.allowed_hosts", i), v.line(&a.AllowedHosts, a), "%s", problem)
		}
	}
	return boundAddr{path: "admin.listen", host: host, port: port}
}

// backend checks one backend except for the checks across backends.
func (v *validator) backend(p string, b *Backend) {
	at := func(field any) int { return v.line(field, b) }

	switch {
	case b.Name == "":
		v.bad(p+".name", at(&b.Name), "is required")
	case !isBackendName(b.Name):
		v.bad(p+".name", at(&b.Name), "must consist of lowercase letters, digits and hyphens ([a-z0-9-]+)")
	}

	switch b.Protocol {
	case "":
		v.bad(p+".protocol", at(&b.Protocol), "is required")
	case protocolPostgres:
		if b.VerifyDatabase == "" {
			v.bad(p+".verify_database", at(&b.VerifyDatabase), "must not be empty")
		}
		if b.LocalInfile.Allow {
			v.bad(p+".local_infile.allow", v.line(&b.LocalInfile.Allow, &b.LocalInfile, b), "is only used by protocol mysql")
		}
	case protocolMySQL:
		// A MySQL login needs no database: the test login connects to none.
		if b.VerifyDatabase != "" || v.given.has(&b.VerifyDatabase) {
			v.bad(p+".verify_database", at(&b.VerifyDatabase), "is only used by protocol postgres")
		}
	default:
		v.bad(p+".protocol", at(&b.Protocol), "must be postgres or mysql")
	}

	v.address(p+".listen", at(&b.Listen), b.Listen, true, false)
	v.address(p+".upstream", at(&b.Upstream), b.Upstream, false, true)
	v.upstreamTLS(p+".upstream_tls", &b.UpstreamTLS, b)
	v.upstreamAuth(p, b)
	v.clientTLS(p+".client_tls", &b.ClientTLS, b)
	v.clients(p+".clients", b)
	v.credential(p+".credential", &b.Credential, b)

	v.positive(p+".drain_deadline", at(&b.DrainDeadline), b.DrainDeadline)
	v.oneOf(p+".on_deadline", at(&b.OnDeadline), b.OnDeadline, onDeadlineKeep, onDeadlineClose)
	if b.DrainConnectionBudget < 1 {
		v.bad(p+".drain_connection_budget", at(&b.DrainConnectionBudget), "must be at least 1")
	}

	l := &b.Limits
	if l.MaxClientConns < 1 {
		v.bad(p+".limits.max_client_conns", at(&l.MaxClientConns), "must be at least 1")
	}
	if l.MaxHandshakes < 1 {
		v.bad(p+".limits.max_handshakes", at(&l.MaxHandshakes), "must be at least 1")
	}
	if l.MaxHandshakesPerSource < 0 {
		v.bad(p+".limits.max_handshakes_per_source", at(&l.MaxHandshakesPerSource), "must not be negative (0: no limit)")
	}
	v.positive(p+".limits.handshake_timeout", at(&l.HandshakeTimeout), l.HandshakeTimeout)
	v.positive(p+".limits.connect_timeout", at(&l.ConnectTimeout), l.ConnectTimeout)
	if l.MaxMessageSize < minMessageSize || l.MaxMessageSize > maxMessageSize {
		v.bad(p+".limits.max_message_size", at(&l.MaxMessageSize), "must be between 1KiB and 1GiB")
	}

	if b.Pool.MaxIdle < 0 {
		v.bad(p+".pool.max_idle", at(&b.Pool.MaxIdle), "must not be negative (0 disables reuse)")
	}
	v.positive(p+".pool.idle_timeout", at(&b.Pool.IdleTimeout), b.Pool.IdleTimeout)
	if b.Rotation.Enabled() {
		v.rotation(p+".rotation", &b.Rotation, b)
	}
}

// rotation checks the rotation block of a backend.
func (v *validator) rotation(p string, r *Rotation, b *Backend) {
	at := func(field any) int { return v.line(field, r, b) }
	switch r.Strategy {
	case "alternating-users":
		if len(r.Users) != 2 || r.Users[0] == "" || r.Users[1] == "" || r.Users[0] == r.Users[1] {
			v.bad(p+".users", at(&r.Users), "alternating-users needs two different user names")
		}
		if r.AdminCredential.Source == "" {
			v.bad(p+".admin_credential", at(&r.AdminCredential), "alternating-users needs an admin_credential allowed to change both users' passwords")
		}
	case "single-user":
		if len(r.Users) > 0 {
			v.bad(p+".users", at(&r.Users), "is only used by alternating-users")
		}
	case "vault-static":
		if b.Credential.Source != sourceVaultDB || b.Credential.StaticRole == "" {
			v.bad(p+".strategy", at(&r.Strategy), "vault-static needs credential.source vault-db with a static_role")
		}
	case "dual-password":
		if b.Protocol != protocolMySQL {
			v.bad(p+".strategy", at(&r.Strategy), "dual-password needs protocol mysql (PostgreSQL has no second password: use alternating-users)")
		}
	default:
		v.bad(p+".strategy", at(&r.Strategy), "must be one of alternating-users, single-user, vault-static, dual-password")
	}
	if r.AdminCredential.Source != "" {
		switch r.AdminCredential.Source {
		case sourceFile, sourceEnv, sourceVaultKV:
			v.credential(p+".admin_credential", &r.AdminCredential, b)
		default:
			v.bad(p+".admin_credential.source", at(&r.AdminCredential.Source), "must be one of file, env, vault-kv")
		}
	}
	switch r.Publish.To {
	case "file":
		if b.Credential.Source != sourceFile {
			v.bad(p+".publish.to", at(&r.Publish.To), "publish to file needs credential.source file")
		}
	case sourceVaultKV:
		if b.Credential.Source != sourceVaultKV || b.Credential.KVVersion != 2 {
			v.bad(p+".publish.to", at(&r.Publish.To), "publish to vault-kv needs credential.source vault-kv with kv_version 2 (check-and-set)")
		}
	case "none":
	default:
		v.bad(p+".publish.to", at(&r.Publish.To), "must be one of file, vault-kv, none")
	}
	if r.Strategy == "vault-static" && r.Publish.To != "none" {
		v.bad(p+".publish.to", at(&r.Publish.To), "vault-static publishes nothing: Vault is the source (use none)")
	}
	if r.Password.Length < 16 || r.Password.Length > 128 {
		v.bad(p+".password.length", at(&r.Password.Length), "must be between 16 and 128")
	}
	seen := map[rune]bool{}
	for _, c := range r.Password.Alphabet {
		if c <= ' ' || c > '~' {
			v.bad(p+".password.alphabet", at(&r.Password.Alphabet), "must be printable ASCII without spaces")
			break
		}
		seen[c] = true
	}
	if len(seen) < 10 {
		v.bad(p+".password.alphabet", at(&r.Password.Alphabet), "must have at least 10 different characters")
	}
	if r.Schedule.Interval <= 0 {
		v.bad(p+".schedule.interval", at(&r.Schedule.Interval), "must be greater than 0")
	}
	if r.FleetDeadline < 0 {
		v.bad(p+".fleet_deadline", at(&r.FleetDeadline), "must not be negative")
	}
	if r.Grace < 0 {
		v.bad(p+".grace", at(&r.Grace), "must not be negative")
	}
}

// upstreamTLS checks the TLS settings towards the database.
func (v *validator) upstreamTLS(p string, t *UpstreamTLS, b *Backend) {
	at := func(field any) int { return v.line(field, t, b) }
	switch t.Mode {
	case tlsRequire, tlsVerifyCA, tlsVerifyFull:
	case tlsDisable:
		for _, f := range []struct {
			name string
			val  *string
		}{{"ca_file", &t.CAFile}, {"cert_file", &t.CertFile}, {"key_file", &t.KeyFile}, {"server_name", &t.ServerName}} {
			if *f.val != "" {
				v.bad(p+"."+f.name, at(f.val), "is only allowed when mode is require, verify-ca or verify-full")
			}
		}
	default:
		v.bad(p+".mode", at(&t.Mode), "must be one of disable, require, verify-ca, verify-full")
	}
	v.certPair(p, t.CertFile, t.KeyFile, at(&t.CertFile), at(&t.KeyFile))
}

// upstreamAuth checks upstream_auth and upstream_rsa_public_key_file.
func (v *validator) upstreamAuth(p string, b *Backend) {
	at := func(field any) int { return v.line(field, b) }
	switch b.Protocol {
	case protocolPostgres:
		v.oneOf(p+".upstream_auth", at(&b.UpstreamAuth), b.UpstreamAuth, authSCRAM, authMD5, upstreamAuthAny)
		if b.UpstreamRSAPublicKeyFile != "" {
			v.bad(p+".upstream_rsa_public_key_file", at(&b.UpstreamRSAPublicKeyFile), "is only used by protocol mysql")
		}
	case protocolMySQL:
		v.oneOf(p+".upstream_auth", at(&b.UpstreamAuth), b.UpstreamAuth, upstreamAuthScramble, upstreamAuthAny)
		if b.UpstreamRSAPublicKeyFile != "" && b.UpstreamAuth == upstreamAuthAny {
			v.bad(p+".upstream_rsa_public_key_file", v.line(&b.UpstreamRSAPublicKeyFile, &b.UpstreamAuth, b),
				"is only used with upstream_auth scramble (with any, the password goes to whatever key the server sends); set upstream_auth: scramble")
		}
	}
}

// clientTLS checks the TLS settings towards clients.
func (v *validator) clientTLS(p string, t *ClientTLS, b *Backend) {
	at := func(field any) int { return v.line(field, t, b) }
	v.certPair(p, t.CertFile, t.KeyFile, at(&t.CertFile), at(&t.KeyFile))
	if t.Required && !t.Enabled() {
		v.bad(p+".required", at(&t.Required), "needs cert_file and key_file")
	}
}

// certPair checks that a certificate and its key come together.
func (v *validator) certPair(p, cert, key string, certLine, keyLine int) {
	switch {
	case cert != "" && key == "":
		v.bad(p+".key_file", certLine, "is required when cert_file is set")
	case cert == "" && key != "":
		v.bad(p+".cert_file", keyLine, "is required when key_file is set")
	}
}

// clients checks the local logins of backend b.
func (v *validator) clients(p string, b *Backend) {
	if len(b.Clients) == 0 {
		v.bad(p, v.line(&b.Clients, b), "at least one client is required")
		return
	}
	users := map[string]string{} // user -> path of the client that has it
	for j := range b.Clients {
		c := &b.Clients[j]
		cp := indexPath(p, j)
		at := func(field any) int { return v.line(field, c) }

		if c.User == "" {
			v.bad(cp+".user", at(&c.User), "is required")
		} else if other, dup := users[c.User]; dup {
			v.bad(cp+".user", at(&c.User), "duplicate user (also used by %s)", other)
		} else {
			users[c.User] = cp
		}

		// An empty value counts as unset, like every other optional string,
		// so that a Config marshaled with all its fields parses again. But
		// "password: ${PW}" with PW empty deserves a pointed message.
		set, emptyGiven, emptyVal := 0, "", (*string)(nil)
		for _, f := range []struct {
			name string
			val  *string
		}{{"password_file", &c.PasswordFile}, {"password_hash", &c.PasswordHash}, {"password", &c.Password}} {
			switch {
			case *f.val != "":
				set++
			case emptyGiven == "" && v.given.has(f.val):
				emptyGiven, emptyVal = f.name, f.val
			}
		}
		switch {
		case set == 0 && emptyGiven != "":
			v.bad(cp+"."+emptyGiven, at(emptyVal), "must not be empty")
		case set == 0:
			v.bad(cp, at(c), "needs one of password_file, password_hash or password")
		case set > 1:
			v.bad(cp, at(c), "must set only one of password_file, password_hash and password")
		}

		if b.Protocol == protocolMySQL {
			// go-mysql checks MySQL scrambles against the plaintext.
			switch c.Auth {
			case authCachingSHA2, authNative:
			default:
				v.bad(cp+".auth", at(&c.Auth), "must be one of caching_sha2_password, mysql_native_password (protocol mysql)")
			}
			if c.PasswordHash != "" {
				v.bad(cp+".password_hash", at(&c.PasswordHash), "is not supported with protocol mysql (use password or password_file)")
			}
			continue
		}
		authOK := true
		switch c.Auth {
		case authSCRAM, authMD5:
		case authPassword:
			if !b.ClientTLS.Enabled() {
				v.bad(cp+".auth", at(&c.Auth), "password (cleartext) requires client_tls with cert_file and key_file")
			}
		default:
			v.bad(cp+".auth", at(&c.Auth), "must be one of scram-sha-256, md5, password")
			authOK = false
		}
		if c.PasswordHash == "" {
			continue
		}
		kind, problem := checkPasswordHash(c.PasswordHash)
		switch {
		case problem != "":
			v.bad(cp+".password_hash", at(&c.PasswordHash), "%s", problem)
		case !authOK:
		case kind == hashSCRAM && c.Auth == authMD5:
			v.bad(cp+".auth", v.line(&c.Auth, &c.PasswordHash, c),
				"md5 cannot be used with a SCRAM-SHA-256 password_hash: answering an MD5 challenge needs the md5 hash or the password; use auth scram-sha-256")
		case kind == hashSCRAM && c.Auth != authSCRAM:
			v.bad(cp+".auth", v.line(&c.Auth, &c.PasswordHash, c), "must be scram-sha-256 with a SCRAM-SHA-256 password_hash")
		case kind == hashMD5 && c.Auth != authMD5:
			v.bad(cp+".auth", v.line(&c.Auth, &c.PasswordHash, c),
				"must be md5 with an md5 password_hash: a SCRAM exchange cannot be verified against an MD5 hash")
		}
	}
}

// credential checks the backend credential source.
func (v *validator) credential(p string, cr *Credential, b *Backend) {
	at := func(field any) int { return v.line(field, cr, b) }
	notAllowed := func(name string, val *string) {
		if *val != "" {
			v.bad(p+"."+name, at(val), "is not allowed with source %s", cr.Source)
		}
	}
	notVault := func() {
		for _, f := range []struct {
			name string
			val  *string
		}{{"mount", &cr.Mount}, {"username_key", &cr.UsernameKey}, {"password_key", &cr.PasswordKey},
			{"role", &cr.Role}, {"static_role", &cr.StaticRole}} {
			notAllowed(f.name, f.val)
		}
		if cr.KVVersion != 0 {
			v.bad(p+".kv_version", at(&cr.KVVersion), "is only allowed with source vault-kv")
		}
	}
	switch cr.Source {
	case "":
		v.bad(p+".source", at(&cr.Source), "is required (file, env, vault-kv or vault-db)")
	case sourceFile:
		if cr.Path == "" {
			v.bad(p+".path", at(&cr.Path), "is required with source file")
		}
		notAllowed("username_env", &cr.UsernameEnv)
		notAllowed("password_env", &cr.PasswordEnv)
		notVault()
	case sourceEnv:
		for _, f := range []struct {
			name string
			val  *string
		}{{"username_env", &cr.UsernameEnv}, {"password_env", &cr.PasswordEnv}} {
			switch {
			case *f.val == "":
				v.bad(p+"."+f.name, at(f.val), "is required with source env")
			case !isEnvName(*f.val):
				v.bad(p+"."+f.name, at(f.val), "must be an environment variable name (letters, digits and underscores, not starting with a digit)")
			}
		}
		notAllowed("path", &cr.Path)
		notVault()
	case sourceVaultKV:
		if cr.Path == "" {
			v.bad(p+".path", at(&cr.Path), "is required with source vault-kv (the secret's path under mount)")
		}
		if cr.Mount == "" {
			v.bad(p+".mount", at(&cr.Mount), "must not be empty")
		}
		if cr.KVVersion != 1 && cr.KVVersion != 2 {
			v.bad(p+".kv_version", at(&cr.KVVersion), "must be 1 or 2")
		}
		if cr.UsernameKey == "" || cr.PasswordKey == "" {
			v.bad(p, at(cr), "username_key and password_key must not be empty")
		}
		notAllowed("username_env", &cr.UsernameEnv)
		notAllowed("password_env", &cr.PasswordEnv)
		notAllowed("role", &cr.Role)
		notAllowed("static_role", &cr.StaticRole)
	case sourceVaultDB:
		if (cr.Role == "") == (cr.StaticRole == "") {
			v.bad(p, at(cr), "source vault-db needs exactly one of role (dynamic) and static_role")
		}
		if cr.Mount == "" {
			v.bad(p+".mount", at(&cr.Mount), "must not be empty")
		}
		for _, f := range []struct {
			name string
			val  *string
		}{{"path", &cr.Path}, {"username_env", &cr.UsernameEnv}, {"password_env", &cr.PasswordEnv},
			{"username_key", &cr.UsernameKey}, {"password_key", &cr.PasswordKey}} {
			notAllowed(f.name, f.val)
		}
		if cr.KVVersion != 0 {
			v.bad(p+".kv_version", at(&cr.KVVersion), "is only allowed with source vault-kv")
		}
	default:
		v.bad(p+".source", at(&cr.Source), "must be one of file, env, vault-kv, vault-db")
	}
	v.positive(p+".refresh_interval", at(&cr.RefreshInterval), cr.RefreshInterval)
}

// vault checks the Vault client block.
func (v *validator) vault(vc *Vault) {
	at := func(field any) int { return v.line(field, vc) }
	if vc.Address == "" {
		v.bad("vault.address", at(&vc.Address), "is required")
	} else if u, err := url.Parse(vc.Address); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.bad("vault.address", at(&vc.Address), "must be an http:// or https:// URL")
	} else if u.Scheme == "http" && !isLoopback(u.Hostname()) && !vc.AllowInsecureHTTP {
		v.bad("vault.address", at(&vc.Address),
			"must be an https:// URL unless the host is loopback (127.0.0.1, ::1 or localhost): over http:// the Vault token and the secrets cross the network in plaintext; set vault.allow_insecure_http: true to accept that")
	}
	v.positive("vault.timeout", at(&vc.Timeout), vc.Timeout)
	a := &vc.Auth
	aat := func(field any) int { return v.line(field, a, vc) }
	only := func(name string, val *string, methods string) {
		if *val != "" {
			v.bad("vault.auth."+name, aat(val), "is only allowed with method %s", methods)
		}
	}
	switch a.Method {
	case "token":
		if a.Token == "" {
			v.bad("vault.auth.token", aat(&a.Token), "is required with method token (for example ${VAULT_TOKEN})")
		}
		only("path", &a.Path, "token_file")
		only("role_id", &a.RoleID, "approle")
		only("secret_id_file", &a.SecretIDFile, "approle")
	case "token_file":
		if a.Path == "" {
			v.bad("vault.auth.path", aat(&a.Path), "is required with method token_file")
		}
		only("token", &a.Token, "token")
		only("role_id", &a.RoleID, "approle")
		only("secret_id_file", &a.SecretIDFile, "approle")
	case "approle":
		if a.RoleID == "" {
			v.bad("vault.auth.role_id", aat(&a.RoleID), "is required with method approle")
		}
		if a.SecretIDFile == "" {
			v.bad("vault.auth.secret_id_file", aat(&a.SecretIDFile), "is required with method approle")
		}
		only("token", &a.Token, "token")
		only("path", &a.Path, "token_file")
	case "":
		v.bad("vault.auth.method", aat(&a.Method), "is required (token, token_file or approle)")
	default:
		v.bad("vault.auth.method", aat(&a.Method), "must be one of token, token_file, approle")
	}
	if a.Method != "approle" && a.Mount != "" {
		v.bad("vault.auth.mount", aat(&a.Mount), "is only allowed with method approle")
	}
}

// address checks a host:port field.
func (v *validator) address(path string, line int, addr string, allowPortZero, needHost bool) {
	if addr == "" {
		v.bad(path, line, "is required")
		return
	}
	if _, _, problem := splitHostPort(addr, allowPortZero, needHost); problem != "" {
		v.bad(path, line, "%s", problem)
	}
}

// positive checks that a duration is greater than zero.
func (v *validator) positive(path string, line int, d Duration) {
	if d <= 0 {
		v.bad(path, line, "must be greater than 0")
	}
}

// oneOf checks an enumerated string field.
func (v *validator) oneOf(path string, line int, val string, allowed ...string) {
	for _, a := range allowed {
		if val == a {
			return
		}
	}
	v.bad(path, line, "must be one of %s", strings.Join(allowed, ", "))
}

// splitHostPort splits addr into host and a numeric port and says what is
// wrong with it otherwise, without quoting it. Port 0 (any free port) is
// accepted only when allowPortZero is set; an empty host ("all interfaces")
// only when needHost is not.
func splitHostPort(addr string, allowPortZero, needHost bool) (host string, port int, problem string) {
	if addr == "" {
		return "", 0, "is required"
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, "must be host:port, such as 127.0.0.1:6432 or [::1]:6432"
	}
	port, err = strconv.Atoi(portStr)
	if err != nil || portStr[0] == '+' || portStr[0] == '-' {
		return "", 0, "must have a numeric port"
	}
	low := 1
	if allowPortZero {
		low = 0
	}
	if port < low || port > 65535 {
		return "", 0, "port must be between " + strconv.Itoa(low) + " and 65535"
	}
	if needHost && host == "" {
		return "", 0, "must include a host"
	}
	return host, port, ""
}

// boundAddr is a listen address, for detecting two listeners on one port.
type boundAddr struct {
	path string
	host string
	port int
}

// parseBound splits a listen address that splitHostPort accepts.
func parseBound(path, addr string) (boundAddr, bool) {
	host, port, problem := splitHostPort(addr, true, false)
	if problem != "" {
		return boundAddr{}, false
	}
	return boundAddr{path: path, host: host, port: port}, true
}

// overlaps reports whether a and b would bind the same port on a common
// address: the same host, or either one on all interfaces.
func (a boundAddr) overlaps(b boundAddr) bool {
	if a.port != b.port {
		return false
	}
	if isWildcard(a.host) || isWildcard(b.host) {
		return true
	}
	ipA, ipB := net.ParseIP(a.host), net.ParseIP(b.host)
	if ipA != nil && ipB != nil {
		return ipA.Equal(ipB)
	}
	return strings.EqualFold(a.host, b.host)
}

// isWildcard reports whether host means all interfaces.
func isWildcard(host string) bool {
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// allowedHostProblem says what is wrong with an admin.allowed_hosts
// entry, or "": it must be a host name or an IP address, without scheme,
// port, path or wildcard.
func allowedHostProblem(h string) string {
	if h == "" {
		return "must not be empty"
	}
	if ip := net.ParseIP(strings.Trim(h, "[]")); ip != nil {
		return ""
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_') {
			return "must be a host name or an IP address, without scheme, port, path or wildcard"
		}
	}
	return ""
}

// isLoopback reports whether host is "localhost" or a loopback IP address
// (127.0.0.0/8, ::1).
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// isBackendName reports whether s matches [a-z0-9-]+.
func isBackendName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
