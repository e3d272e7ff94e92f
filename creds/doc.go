// Package creds provides the backend credential of a credswap backend: where
// it comes from, which one is current, and when a new one may replace it.
//
// # Credential
//
// A [Credential] is a username and password plus identifiers that are safe
// to show (version, source kind, expiry, lease id). It redacts its password
// wherever it can be printed: String, GoString and Format (every fmt verb),
// MarshalJSON, zap's MarshalLogObject and slog's LogValue. Code reads
// Password only to authenticate. Logs and status carry credential
// identifiers — username, version, lease id — never passwords.
//
// # Sources
//
// A [Source] reads the credential from where it is kept: [FileSource] (a
// JSON file, or a directory with "username" and "password" files as
// Kubernetes mounts a Secret), [EnvSource] (two environment variables) and
// [NewStaticSource] (a fixed credential for tests and one-shot commands),
// and the HashiCorp Vault sources sharing one logged-in [Vault] client:
// [VaultKVSource] (KV v1 and v2, following versions),
// [VaultDynamicSource] (database leases: renewed, replaced at two thirds
// of their TTL, revoked through [Retirer] once no session uses them) and
// [VaultStaticSource] (static roles, read again after Vault's rotation).
// Fetch errors name what is wrong and where, never the content read. A
// source that can notice changes also implements [Watcher]; its Watch calls
// back, debounced and possibly spuriously, whenever a re-read may find
// something new. Sources without a version of their own (files,
// environment) derive Version from a keyed digest that changes with the
// content but reveals nothing about the password.
//
// # Store, generations and adoption
//
// A [Store] holds the credential of one backend as a [Generation]: an
// immutable, numbered (from 1) adoption of one credential. Start reads the
// source and adopts generation 1, after a test login ([VerifyFunc]) if
// possible and unverified otherwise, because a proxy must start even while
// its database is down. Afterwards the Store re-reads the source when the
// Watcher announces a change, every RefreshInterval, when Refresh is called,
// and on a backoff timer while something fails. A credential that differs
// from the current one (by username, password or version) is adopted only
// after its test login succeeds: it becomes generation N+1, the previous
// current generation becomes the Fallback until RetireFallback, and every
// subscriber is called with it. A failed read or test login keeps the
// current generation, is reported in [Status] and the log, and is retried
// with exponential backoff and jitter, each retry re-reading the source.
//
// # Ownership and concurrency
//
// The Store owns two goroutines between Start and Stop: the refresh loop and,
// for a Watcher source, the watch. Stop ends and waits for both. Only one
// refresh runs at a time: concurrent Refresh calls and the loop share the one
// in progress, so generations are adopted and announced in order. Current,
// Fallback and Status are safe for concurrent use and never block on I/O;
// Current and Fallback are lock-free reads, and the returned *Generation must
// not be modified. Every Fetch and test login is bounded by a 10-second
// timeout in addition to the caller's context.
package creds
