package config

import (
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// tree is a document under construction for validation cases.
type tree = map[string]any

// validTree returns a valid document equivalent to minimalDoc.
func validTree() tree {
	return tree{
		"backends": []any{backendTree("orders", "127.0.0.1:6432")},
	}
}

func backendTree(name, listen string) tree {
	return tree{
		"name":       name,
		"protocol":   "postgres",
		"listen":     listen,
		"upstream":   "127.0.0.1:5432",
		"clients":    []any{tree{"user": "app", "password_file": "app-password"}},
		"credential": tree{"source": "file", "path": "orders.json"},
	}
}

// backend returns backend i of doc.
func backend(doc tree, i int) tree { return doc["backends"].([]any)[i].(tree) }

// client returns client j of backend 0.
func client(doc tree, j int) tree { return backend(doc, 0)["clients"].([]any)[j].(tree) }

// sub returns the mapping at key of m, creating it.
func sub(m tree, key string) tree {
	if s, ok := m[key].(tree); ok {
		return s
	}
	s := tree{}
	m[key] = s
	return s
}

func addBackend(doc tree, b tree) { doc["backends"] = append(doc["backends"].([]any), b) }

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(doc tree)
		path   string // "" with msg "" means the document is valid
		msg    string
	}{
		{"valid", func(tree) {}, "", ""},

		// backends
		{"no backends", func(d tree) { delete(d, "backends") }, "backends", "at least one backend is required"},
		{"empty backends", func(d tree) { d["backends"] = []any{} }, "backends", "at least one backend is required"},
		{"name missing", func(d tree) { delete(backend(d, 0), "name") }, "backends[0].name", "is required"},
		{"name uppercase", func(d tree) { backend(d, 0)["name"] = "Orders" }, "backends[0].name", "lowercase letters, digits and hyphens"},
		{"name underscore", func(d tree) { backend(d, 0)["name"] = "a_b" }, "backends[0].name", "[a-z0-9-]+"},
		{"name with digits and hyphens", func(d tree) { backend(d, 0)["name"] = "db-2" }, "", ""},
		{"duplicate name", func(d tree) { addBackend(d, backendTree("orders", "127.0.0.1:6433")) },
			"backends[1].name", "duplicate backend name (also used by backends[0])"},
		{"protocol missing", func(d tree) { delete(backend(d, 0), "protocol") }, "backends[0].protocol", "is required"},
		{"protocol mysql", func(d tree) { backend(d, 0)["protocol"] = "mysql" }, "", ""},
		{"protocol unknown", func(d tree) { backend(d, 0)["protocol"] = "oracle" }, "backends[0].protocol", "must be postgres or mysql"},
		{"mysql verify_database", func(d tree) {
			backend(d, 0)["protocol"] = "mysql"
			backend(d, 0)["verify_database"] = "mysql"
		}, "backends[0].verify_database", "is only used by protocol postgres"},
		{"mysql auth native", func(d tree) {
			backend(d, 0)["protocol"] = "mysql"
			client(d, 0)["auth"] = "mysql_native_password"
		}, "", ""},
		{"mysql auth scram", func(d tree) {
			backend(d, 0)["protocol"] = "mysql"
			client(d, 0)["auth"] = "scram-sha-256"
		}, "backends[0].clients[0].auth", "must be one of caching_sha2_password, mysql_native_password"},
		{"mysql password_hash", func(d tree) {
			backend(d, 0)["protocol"] = "mysql"
			delete(client(d, 0), "password_file")
			client(d, 0)["password_hash"] = "md5" + strings.Repeat("a", 32)
		}, "backends[0].clients[0].password_hash", "is not supported with protocol mysql"},
		{"mysql local_infile", func(d tree) {
			backend(d, 0)["protocol"] = "mysql"
			sub(backend(d, 0), "local_infile")["allow"] = true
		}, "", ""},
		{"postgres local_infile", func(d tree) { sub(backend(d, 0), "local_infile")["allow"] = true },
			"backends[0].local_infile.allow", "is only used by protocol mysql"},
		{"postgres auth caching_sha2", func(d tree) { client(d, 0)["auth"] = "caching_sha2_password" },
			"backends[0].clients[0].auth", "must be one of scram-sha-256, md5, password"},
		{"mysql rotation", func(d tree) {
			backend(d, 0)["protocol"] = "mysql"
			sub(backend(d, 0), "rotation")["strategy"] = "dual-password"
		}, "", ""},
		{"postgres dual-password", func(d tree) { sub(backend(d, 0), "rotation")["strategy"] = "dual-password" },
			"backends[0].rotation.strategy", "dual-password needs protocol mysql"},
		{"postgres upstream_auth md5", func(d tree) { backend(d, 0)["upstream_auth"] = "md5" }, "", ""},
		{"postgres upstream_auth any", func(d tree) { backend(d, 0)["upstream_auth"] = "any" }, "", ""},
		{"postgres upstream_auth password", func(d tree) { backend(d, 0)["upstream_auth"] = "password" },
			"backends[0].upstream_auth", "must be one of scram-sha-256, md5, any"},
		{"postgres upstream_auth scramble", func(d tree) { backend(d, 0)["upstream_auth"] = "scramble" },
			"backends[0].upstream_auth", "must be one of scram-sha-256, md5, any"},
		{"postgres upstream_rsa_public_key_file", func(d tree) { backend(d, 0)["upstream_rsa_public_key_file"] = "db.pem" },
			"backends[0].upstream_rsa_public_key_file", "is only used by protocol mysql"},
		{"mysql upstream_auth scramble with a key", func(d tree) {
			backend(d, 0)["protocol"] = "mysql"
			backend(d, 0)["upstream_auth"] = "scramble"
			backend(d, 0)["upstream_rsa_public_key_file"] = "db.pem"
		}, "", ""},
		{"mysql upstream_auth scram-sha-256", func(d tree) {
			backend(d, 0)["protocol"] = "mysql"
			backend(d, 0)["upstream_auth"] = "scram-sha-256"
		}, "backends[0].upstream_auth", "must be one of scramble, any"},
		{"mysql verify-full key without upstream_auth", func(d tree) {
			backend(d, 0)["protocol"] = "mysql"
			backend(d, 0)["upstream_tls"] = tree{"mode": "verify-full"}
			backend(d, 0)["upstream_rsa_public_key_file"] = "db.pem"
		}, "backends[0].upstream_rsa_public_key_file", "is only used with upstream_auth scramble"},
		{"verify_database empty", func(d tree) { backend(d, 0)["verify_database"] = "" }, "backends[0].verify_database", "must not be empty"},

		// addresses
		{"listen missing", func(d tree) { delete(backend(d, 0), "listen") }, "backends[0].listen", "is required"},
		{"listen without port", func(d tree) { backend(d, 0)["listen"] = "127.0.0.1" }, "backends[0].listen", "must be host:port"},
		{"listen named port", func(d tree) { backend(d, 0)["listen"] = "127.0.0.1:postgres" }, "backends[0].listen", "must have a numeric port"},
		{"listen signed port", func(d tree) { backend(d, 0)["listen"] = "127.0.0.1:+80" }, "backends[0].listen", "must have a numeric port"},
		{"listen port too big", func(d tree) { backend(d, 0)["listen"] = "127.0.0.1:65536" }, "backends[0].listen", "port must be between 0 and 65535"},
		{"listen port 0", func(d tree) { backend(d, 0)["listen"] = "127.0.0.1:0" }, "", ""},
		{"listen all interfaces", func(d tree) { backend(d, 0)["listen"] = ":6432" }, "", ""},
		{"upstream missing", func(d tree) { delete(backend(d, 0), "upstream") }, "backends[0].upstream", "is required"},
		{"upstream port 0", func(d tree) { backend(d, 0)["upstream"] = "db:0" }, "backends[0].upstream", "port must be between 1 and 65535"},
		{"upstream without host", func(d tree) { backend(d, 0)["upstream"] = ":5432" }, "backends[0].upstream", "must include a host"},
		{"upstream IPv6", func(d tree) { backend(d, 0)["upstream"] = "[2001:db8::1]:5432" }, "", ""},
		{"duplicate listen", func(d tree) { addBackend(d, backendTree("b", "127.0.0.1:6432")) },
			"backends[1].listen", "address already used by backends[0].listen"},
		{"listen overlaps wildcard", func(d tree) { addBackend(d, backendTree("b", "0.0.0.0:6432")) },
			"backends[1].listen", "address already used by backends[0].listen"},
		{"listen same IPv6 spelled differently", func(d tree) {
			backend(d, 0)["listen"] = "[::1]:6432"
			addBackend(d, backendTree("b", "[0:0::1]:6432"))
		}, "backends[1].listen", "address already used by backends[0].listen"},
		{"listen same port other host", func(d tree) { addBackend(d, backendTree("b", "127.0.0.2:6432")) }, "", ""},
		{"listen port 0 twice", func(d tree) {
			backend(d, 0)["listen"] = "127.0.0.1:0"
			addBackend(d, backendTree("b", "127.0.0.1:0"))
		}, "", ""},
		{"listen equals admin", func(d tree) { backend(d, 0)["listen"] = DefaultAdminListen },
			"backends[0].listen", "address already used by admin.listen"},

		// upstream_tls
		{"tls mode unknown", func(d tree) { sub(backend(d, 0), "upstream_tls")["mode"] = "prefer" },
			"backends[0].upstream_tls.mode", "must be one of disable, require, verify-ca, verify-full"},
		{"tls ca_file with disable", func(d tree) { sub(backend(d, 0), "upstream_tls")["ca_file"] = "ca.pem" },
			"backends[0].upstream_tls.ca_file", "only allowed when mode is require, verify-ca or verify-full"},
		{"tls server_name with disable", func(d tree) { sub(backend(d, 0), "upstream_tls")["server_name"] = "db" },
			"backends[0].upstream_tls.server_name", "only allowed when mode"},
		{"tls verify-full", func(d tree) {
			u := sub(backend(d, 0), "upstream_tls")
			u["mode"], u["ca_file"], u["server_name"] = "verify-full", "ca.pem", "db"
		}, "", ""},
		{"tls cert without key", func(d tree) {
			u := sub(backend(d, 0), "upstream_tls")
			u["mode"], u["cert_file"] = "require", "c.pem"
		}, "backends[0].upstream_tls.key_file", "is required when cert_file is set"},
		{"tls key without cert", func(d tree) {
			u := sub(backend(d, 0), "upstream_tls")
			u["mode"], u["key_file"] = "verify-ca", "k.pem"
		}, "backends[0].upstream_tls.cert_file", "is required when key_file is set"},

		// client_tls
		{"client tls cert without key", func(d tree) { sub(backend(d, 0), "client_tls")["cert_file"] = "s.pem" },
			"backends[0].client_tls.key_file", "is required when cert_file is set"},
		{"client tls required without cert", func(d tree) { sub(backend(d, 0), "client_tls")["required"] = true },
			"backends[0].client_tls.required", "needs cert_file and key_file"},

		// clients
		{"clients missing", func(d tree) { delete(backend(d, 0), "clients") }, "backends[0].clients", "at least one client is required"},
		{"clients empty", func(d tree) { backend(d, 0)["clients"] = []any{} }, "backends[0].clients", "at least one client is required"},
		{"user missing", func(d tree) { delete(client(d, 0), "user") }, "backends[0].clients[0].user", "is required"},
		{"duplicate user", func(d tree) {
			b := backend(d, 0)
			b["clients"] = append(b["clients"].([]any), tree{"user": "app", "password": "x"})
		}, "backends[0].clients[1].user", "duplicate user (also used by backends[0].clients[0])"},
		{"no password", func(d tree) { delete(client(d, 0), "password_file") },
			"backends[0].clients[0]", "needs one of password_file, password_hash or password"},
		{"empty password", func(d tree) {
			delete(client(d, 0), "password_file")
			client(d, 0)["password"] = ""
		}, "backends[0].clients[0].password", "must not be empty"},
		{"two passwords", func(d tree) { client(d, 0)["password"] = "x" },
			"backends[0].clients[0]", "must set only one of password_file, password_hash and password"},
		{"auth unknown", func(d tree) { client(d, 0)["auth"] = "trust" },
			"backends[0].clients[0].auth", "must be one of scram-sha-256, md5, password"},
		{"auth md5 with password", func(d tree) { client(d, 0)["auth"] = "md5" }, "", ""},
		{"auth password without TLS", func(d tree) { client(d, 0)["auth"] = "password" },
			"backends[0].clients[0].auth", "password (cleartext) requires client_tls"},
		{"auth password with TLS", func(d tree) {
			client(d, 0)["auth"] = "password"
			c := sub(backend(d, 0), "client_tls")
			c["cert_file"], c["key_file"] = "s.pem", "s.key"
		}, "", ""},
		{"scram hash", func(d tree) { setHash(d, testSCRAMHash) }, "", ""},
		{"md5 hash", func(d tree) { setHash(d, testMD5Hash); client(d, 0)["auth"] = "md5" }, "", ""},
		{"hash garbage", func(d tree) { setHash(d, "plaintext") },
			"backends[0].clients[0].password_hash", "must be a SCRAM-SHA-256 verifier"},
		{"md5 hash uppercase", func(d tree) { setHash(d, strings.ToUpper(testMD5Hash[3:])); client(d, 0)["auth"] = "md5" },
			"backends[0].clients[0].password_hash", "32 lowercase hex digits"},
		{"md5 hash short", func(d tree) { setHash(d, testMD5Hash[:34]); client(d, 0)["auth"] = "md5" },
			"backends[0].clients[0].password_hash", "32 lowercase hex digits"},
		{"scram hash missing part", func(d tree) { setHash(d, "SCRAM-SHA-256$4096:c2FsdA==") },
			"backends[0].clients[0].password_hash", "must look like"},
		{"scram hash zero iterations", func(d tree) { setHash(d, strings.Replace(testSCRAMHash, "$4096:", "$0:", 1)) },
			"backends[0].clients[0].password_hash", "iteration count must be a positive integer"},
		{"scram hash bad salt", func(d tree) { setHash(d, strings.Replace(testSCRAMHash, "MDEyMzQ1Njc4OWFiY2RlZg==", "!!", 1)) },
			"backends[0].clients[0].password_hash", "salt must be non-empty base64"},
		{"scram hash short key", func(d tree) { setHash(d, strings.Replace(testSCRAMHash, "$bpSY", "$bp", 1)) },
			"backends[0].clients[0].password_hash", "StoredKey must be 32 bytes"},
		{"scram hash with md5 auth", func(d tree) { setHash(d, testSCRAMHash); client(d, 0)["auth"] = "md5" },
			"backends[0].clients[0].auth", "md5 cannot be used with a SCRAM-SHA-256 password_hash"},
		{"scram hash with password auth", func(d tree) {
			setHash(d, testSCRAMHash)
			client(d, 0)["auth"] = "password"
			c := sub(backend(d, 0), "client_tls")
			c["cert_file"], c["key_file"] = "s.pem", "s.key"
		}, "backends[0].clients[0].auth", "must be scram-sha-256 with a SCRAM-SHA-256 password_hash"},
		{"md5 hash with default auth", func(d tree) { setHash(d, testMD5Hash) },
			"backends[0].clients[0].auth", "must be md5 with an md5 password_hash"},

		// credential
		{"source missing", func(d tree) { delete(sub(backend(d, 0), "credential"), "source") },
			"backends[0].credential.source", "is required"},
		{"source unknown", func(d tree) { sub(backend(d, 0), "credential")["source"] = "s3" },
			"backends[0].credential.source", "must be one of file, env, vault-kv, vault-db"},
		{"vault-kv without the vault block", func(d tree) {
			backend(d, 0)["credential"] = tree{"source": "vault-kv", "path": "orders/db"}
		}, "backends[0].credential.source", "needs the vault block"},
		{"vault-kv", func(d tree) {
			d["vault"] = tree{"address": "http://127.0.0.1:8200", "auth": tree{"method": "token", "token": "t"}}
			backend(d, 0)["credential"] = tree{"source": "vault-kv", "path": "orders/db", "kv_version": 1}
		}, "", ""},
		{"vault-kv bad version", func(d tree) {
			d["vault"] = tree{"address": "http://127.0.0.1:8200", "auth": tree{"method": "token", "token": "t"}}
			backend(d, 0)["credential"] = tree{"source": "vault-kv", "path": "orders/db", "kv_version": 3}
		}, "backends[0].credential.kv_version", "must be 1 or 2"},
		{"vault-db without a role", func(d tree) {
			d["vault"] = tree{"address": "http://127.0.0.1:8200", "auth": tree{"method": "token", "token": "t"}}
			backend(d, 0)["credential"] = tree{"source": "vault-db"}
		}, "backends[0].credential", "exactly one of role (dynamic) and static_role"},
		{"vault-db dynamic", func(d tree) {
			d["vault"] = tree{"address": "https://vault:8200", "auth": tree{"method": "approle", "role_id": "r", "secret_id_file": "app-password"}}
			backend(d, 0)["credential"] = tree{"source": "vault-db", "role": "orders"}
		}, "", ""},
		{"vault-db with a kv field", func(d tree) {
			d["vault"] = tree{"address": "http://127.0.0.1:8200", "auth": tree{"method": "token", "token": "t"}}
			backend(d, 0)["credential"] = tree{"source": "vault-db", "static_role": "orders", "path": "x"}
		}, "backends[0].credential.path", "is not allowed with source vault-db"},
		{"vault address not a URL", func(d tree) {
			d["vault"] = tree{"address": "vault:8200", "auth": tree{"method": "token", "token": "t"}}
		}, "vault.address", "http:// or https:// URL"},
		{"vault plain HTTP off loopback", func(d tree) {
			d["vault"] = tree{"address": "http://vault.internal:8200", "auth": tree{"method": "token", "token": "t"}}
		}, "vault.address", "must be an https:// URL unless the host is loopback"},
		{"vault plain HTTP off loopback allowed", func(d tree) {
			d["vault"] = tree{"address": "http://vault.internal:8200", "allow_insecure_http": true, "auth": tree{"method": "token", "token": "t"}}
		}, "", ""},
		{"vault plain HTTP on localhost", func(d tree) {
			d["vault"] = tree{"address": "http://localhost:8200", "auth": tree{"method": "token", "token": "t"}}
		}, "", ""},
		{"vault plain HTTP on IPv6 loopback", func(d tree) {
			d["vault"] = tree{"address": "http://[::1]:8200", "auth": tree{"method": "token", "token": "t"}}
		}, "", ""},
		{"vault approle without secret", func(d tree) {
			d["vault"] = tree{"address": "https://v:8200", "auth": tree{"method": "approle", "role_id": "r"}}
		}, "vault.auth.secret_id_file", "is required with method approle"},
		{"vault unknown method", func(d tree) {
			d["vault"] = tree{"address": "https://v:8200", "auth": tree{"method": "kerberos"}}
		}, "vault.auth.method", "must be one of token, token_file, approle"},
		{"file without path", func(d tree) { delete(sub(backend(d, 0), "credential"), "path") },
			"backends[0].credential.path", "is required with source file"},
		{"file with env names", func(d tree) { sub(backend(d, 0), "credential")["username_env"] = "U" },
			"backends[0].credential.username_env", "is not allowed with source file"},
		{"env", func(d tree) {
			backend(d, 0)["credential"] = tree{"source": "env", "username_env": "DB_USER", "password_env": "DB_PASSWORD"}
		}, "", ""},
		{"env without password_env", func(d tree) {
			backend(d, 0)["credential"] = tree{"source": "env", "username_env": "DB_USER"}
		}, "backends[0].credential.password_env", "is required with source env"},
		{"env with path", func(d tree) {
			backend(d, 0)["credential"] = tree{"source": "env", "username_env": "U", "password_env": "P", "path": "x"}
		}, "backends[0].credential.path", "is not allowed with source env"},
		{"env bad name", func(d tree) {
			backend(d, 0)["credential"] = tree{"source": "env", "username_env": "DB-USER", "password_env": "P"}
		}, "backends[0].credential.username_env", "must be an environment variable name"},
		{"refresh_interval zero", func(d tree) { sub(backend(d, 0), "credential")["refresh_interval"] = "0s" },
			"backends[0].credential.refresh_interval", "must be greater than 0"},

		// deadlines, limits, pool
		{"on_deadline unknown", func(d tree) { backend(d, 0)["on_deadline"] = "kill" }, "backends[0].on_deadline", "must be one of keep, close"},
		{"drain_deadline zero", func(d tree) { backend(d, 0)["drain_deadline"] = "0s" }, "backends[0].drain_deadline", "must be greater than 0"},
		{"max_client_conns zero", func(d tree) { sub(backend(d, 0), "limits")["max_client_conns"] = 0 },
			"backends[0].limits.max_client_conns", "must be at least 1"},
		{"handshake_timeout zero", func(d tree) { sub(backend(d, 0), "limits")["handshake_timeout"] = "0s" },
			"backends[0].limits.handshake_timeout", "must be greater than 0"},
		{"connect_timeout zero", func(d tree) { sub(backend(d, 0), "limits")["connect_timeout"] = "0s" },
			"backends[0].limits.connect_timeout", "must be greater than 0"},
		{"max_message_size too small", func(d tree) { sub(backend(d, 0), "limits")["max_message_size"] = 1023 },
			"backends[0].limits.max_message_size", "must be between 1KiB and 1GiB"},
		{"max_message_size smallest", func(d tree) { sub(backend(d, 0), "limits")["max_message_size"] = "1KiB" }, "", ""},
		{"max_message_size largest", func(d tree) { sub(backend(d, 0), "limits")["max_message_size"] = "1GiB" }, "", ""},
		{"max_message_size too large", func(d tree) { sub(backend(d, 0), "limits")["max_message_size"] = "1025MiB" },
			"backends[0].limits.max_message_size", "must be between 1KiB and 1GiB"},

		// process-wide limits
		{"partial message memory", func(d tree) {
			d["limits"] = tree{"max_partial_message_memory": "64MiB", "partial_message_memory_wait": "1s"}
		}, "", ""},
		{"partial message memory below max_message_size", func(d tree) {
			d["limits"] = tree{"max_partial_message_memory": "32MiB"}
		}, "limits.max_partial_message_memory", "must be at least the largest limits.max_message_size of the backends"},
		{"partial message memory too small", func(d tree) { d["limits"] = tree{"max_partial_message_memory": 1023} },
			"limits.max_partial_message_memory", "must be between 1KiB and 64GiB"},
		{"partial message memory with max_message_size above it", func(d tree) {
			sub(backend(d, 0), "limits")["max_message_size"] = "1GiB" // the default follows
		}, "", ""},
		{"partial message memory wait zero", func(d tree) { d["limits"] = tree{"partial_message_memory_wait": "0s"} },
			"limits.partial_message_memory_wait", "must be greater than 0"},
		{"max_idle negative", func(d tree) { sub(backend(d, 0), "pool")["max_idle"] = -1 },
			"backends[0].pool.max_idle", "must not be negative"},
		{"idle_timeout zero", func(d tree) { sub(backend(d, 0), "pool")["idle_timeout"] = "0s" },
			"backends[0].pool.idle_timeout", "must be greater than 0"},

		// admin, log, shutdown
		{"admin listen invalid", func(d tree) { sub(d, "admin")["listen"] = "localhost" }, "admin.listen", "must be host:port"},
		{"admin listen empty", func(d tree) { sub(d, "admin")["listen"] = "" }, "admin.listen", "is required"},
		{"admin not loopback", func(d tree) { sub(d, "admin")["listen"] = "10.0.0.1:9649" },
			"admin.listen", "must be a loopback address (127.0.0.1, ::1 or localhost) unless admin.token_file is set"},
		{"admin all interfaces", func(d tree) { sub(d, "admin")["listen"] = ":9649" }, "admin.listen", "must be a loopback address"},
		{"admin not loopback with token", func(d tree) {
			a := sub(d, "admin")
			a["listen"], a["token_file"] = "0.0.0.0:9649", "token"
		}, "", ""},
		{"admin localhost", func(d tree) { sub(d, "admin")["listen"] = "localhost:9649" }, "", ""},
		{"admin IPv6 loopback", func(d tree) { sub(d, "admin")["listen"] = "[::1]:9649" }, "", ""},
		{"admin 127/8", func(d tree) { sub(d, "admin")["listen"] = "127.1.2.3:0" }, "", ""},
		{"admin max_connections zero", func(d tree) { sub(d, "admin")["max_connections"] = 0 },
			"admin.max_connections", "must be at least 1"},
		{"admin allowed host with port", func(d tree) { sub(d, "admin")["allowed_hosts"] = []any{"ok.example", "credswap.internal:9649"} },
			"admin.allowed_hosts[1]", "must be a host name or an IP address, without scheme, port, path or wildcard"},
		{"admin allowed host wildcard", func(d tree) { sub(d, "admin")["allowed_hosts"] = []any{"*.example"} },
			"admin.allowed_hosts[0]", "without scheme, port, path or wildcard"},
		{"admin allowed host empty", func(d tree) { sub(d, "admin")["allowed_hosts"] = []any{""} },
			"admin.allowed_hosts[0]", "must not be empty"},
		{"admin allowed hosts", func(d tree) {
			sub(d, "admin")["allowed_hosts"] = []any{"credswap.orders.svc", "10.0.0.5", "fd00::5", "[fd00::6]"}
		}, "", ""},
		{"log level", func(d tree) { sub(d, "log")["level"] = "trace" }, "log.level", "must be one of debug, info, warn, error"},
		{"log format", func(d tree) { sub(d, "log")["format"] = "text" }, "log.format", "must be one of json, console"},
		{"shutdown_timeout zero", func(d tree) { d["shutdown_timeout"] = "0s" }, "shutdown_timeout", "must be greater than 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := validTree()
			tt.mutate(d)
			data, err := yaml.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := Parse(data, ParseOptions{})
			if tt.path == "" && tt.msg == "" {
				if err != nil {
					t.Fatalf("want valid, got:\n%v\ndocument:\n%s", err, data)
				}
				if cfg == nil {
					t.Fatal("nil Config without an error")
				}
				return
			}
			if err == nil {
				t.Fatalf("want %s: %s, got no error; document:\n%s", tt.path, tt.msg, data)
			}
			errs := fieldErrors(t, err)
			if len(errs) != 1 || !hasError(errs, tt.path, tt.msg) {
				t.Errorf("want exactly %s: %s, got:\n%v\ndocument:\n%s", tt.path, tt.msg, err, data)
			}
		})
	}
}

// setHash replaces the password of client 0 of backend 0 with hash h.
func setHash(d tree, h string) {
	c := client(d, 0)
	delete(c, "password_file")
	c["password_hash"] = h
}

// TestValidateLines checks that validation errors carry the line of the
// field, or of the enclosing entry when the field is absent, and come out
// in document order whatever order the checks ran in.
func TestValidateLines(t *testing.T) {
	doc := `log:
  format: xml
backends:
  - name: a
    listen: 127.0.0.1:6432
    upstream: db:5432
    protocol: postgres
    clients: [{user: app, password: x}]
    credential: {source: env, username_env: U, password_env: P}
    on_deadline: later
  - protocol: postgres
    listen: 127.0.0.1:6433
    upstream: db:5432
    clients: [{user: app, password: x}]
    credential: {source: env, username_env: U, password_env: P}
admin:
  listen: 10.1.1.1:1
`
	_, errs := mustFail(t, doc, ParseOptions{})
	var got []string
	for _, e := range errs {
		got = append(got, e.Error())
	}
	want := []string{
		"log.format: must be one of json, console (line 2)",
		"backends[0].on_deadline: must be one of keep, close (line 10)",
		"backends[1].name: is required (line 11)",
		"admin.listen: must be a loopback address (127.0.0.1, ::1 or localhost) unless admin.token_file is set (line 17)",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("errors\n got: %q\nwant: %q", got, want)
	}
}
