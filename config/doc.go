// Package config loads and validates the credswap configuration file.
//
// Load reads a YAML file; Parse does the same work on bytes without touching
// the file system. Both return a *Config with defaults applied and every
// value checked, or every problem found at once.
//
// # Strict decoding
//
// The document is decoded into a yaml.Node tree and walked against the Go
// types of Config, so that unknown keys ("did you mean" when a known key is
// within two edits), values of the wrong type, duplicate keys and a document
// that is not a mapping are all errors. Anchors, aliases and merge keys
// ("<<") work as in YAML, with explicit keys taking precedence over merged
// ones and earlier merged mappings over later ones.
//
// Scalars are typed by their text: integers in decimal, booleans as true or
// false, durations in Go syntax ("30s", "1m30s", never negative), byte sizes
// as a number of bytes with an optional unit B, KB, KiB, MB, MiB, GB or GiB
// (KB = 1000, KiB = 1024). A quoted "100" is therefore a valid integer.
//
// # Errors
//
// Every problem is a *FieldError whose Path names the field in the form
// backends[0].credential.path and whose Msg says what is wrong, with
// "(line N)" where the line is known:
//
//	backends[0].credential.pathh: unknown key (did you mean "path"?) (line 12)
//
// Problems are joined with errors.Join in document order; use errors.As to
// inspect them. Messages never contain a configured value, only the field,
// the expected form and environment variable names, so they are safe to log
// even when the field holds a password.
//
// # Environment variables
//
// In scalar values (never in keys), ${NAME} is replaced with the variable's
// value and ${NAME:-default} with its value or, when it is unset or empty,
// with default. "$$" is a literal "$"; a "$" followed by anything else is
// kept as it is. An unset variable without a default is an error at the
// field that uses it. Expansion happens after YAML parsing, so a value with
// quotes, colons or newlines cannot change the document's structure, and
// substituted text is not expanded again.
//
// # Defaults
//
// A field absent from the document (or null) takes its default; a field
// present with a zero value keeps it, so pool.max_idle: 0 disables reuse.
//
//	admin.listen                       127.0.0.1:9649 (DefaultAdminListen)
//	admin.max_connections              64 (DefaultAdminMaxConnections)
//	shutdown_timeout                   30s
//	log.level, log.format              info, json
//	limits                             max_partial_message_memory 256MiB (or the largest
//	                                   backends[].limits.max_message_size if larger),
//	                                   partial_message_memory_wait 30s
//	backends[].upstream_tls.mode       disable
//	backends[].upstream_auth           any with upstream_tls.mode verify-full, else
//	                                   scram-sha-256 (postgres) or scramble (mysql)
//	backends[].credential.refresh_interval  30s
//	backends[].verify_database         postgres (protocol postgres only)
//	backends[].drain_deadline          60s
//	backends[].on_deadline             keep
//	backends[].limits                  max_client_conns 1000, handshake_timeout 10s,
//	                                   connect_timeout 15s, max_message_size 64MiB
//	backends[].pool                    max_idle 16, idle_timeout 10m
//	backends[].clients[].auth          scram-sha-256 (protocol mysql: caching_sha2_password)
//	backends[].local_infile.allow      false (protocol mysql only)
//
// # File paths
//
// The optional vault block configures the Vault client of vault-kv and
// vault-db sources; a backend's rotation block configures the rotations
// the proxy runs itself (package rotate).
//
// Relative paths in password_file, credential.path (source file),
// admin.token_file, cert_file, key_file, ca_file and
// upstream_rsa_public_key_file are resolved against ParseOptions.BaseDir;
// Load uses the configuration file's directory. SecretFiles lists the
// files that hold secrets.
package config
