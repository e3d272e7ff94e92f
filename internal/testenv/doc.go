// Package testenv starts throwaway database servers for tests and benchmarks and hands out
// per-test databases, users, certificates and client commands.
//
// Servers run from the binaries installed on the machine, in temp dirs, on free loopback ports,
// with password authentication (scram-sha-256) and TLS from a fresh CA. One PostgreSQL server is
// shared by every test of a test binary ([PG]); each test creates its own databases and users
// ([Postgres.CreateDatabase], [Postgres.CreateUser]) so tests stay independent and may run in
// parallel. A test binary that uses [PG] must call [Main] from TestMain so the server is stopped
// and its directories removed when the tests end:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
//
// A MariaDB server ([MariaDBServer], or [StartTestMariaDB] for a private one) is shared the same
// way: mariadb-install-db and mariadbd (with --user=root when root) from the machine, accounts
// with mysql_native_password, root with a random password on the socket, 127.0.0.1 and '%', TLS
// from a fresh CA. The module has no MySQL driver, so its helpers ([MariaDB.Exec],
// [MariaDB.Query], [MariaDB.CreateDatabase], [MariaDB.CreateUser], [MariaDB.Grant]) run the
// mariadb command-line client as root over the unix socket; [MariaDB.Command] runs it for tests,
// with no option file and nothing MYSQL_* from the environment, and [ParseMariaDBError] reads the
// errors it prints. $CREDSWAP_MARIADB_BINDIR names a directory holding all three programs.
//
// A HashiCorp Vault dev server (in memory, root token, HTTP on loopback), built once from the
// version pinned in tools/vault ([BuildVault]), is shared the same way ([VaultServer]) or started
// per test ([StartTestVault]); [Vault] has helpers for KV v2, the database engine and AppRole.
//
// When the environment variable CI is "true", a missing server binary fails the test instead of
// skipping it.
//
// Lifetime: a server is stopped by [Postgres.Stop], by [Main] at the end of the test binary, or,
// on Linux, by the kernel sending it SIGINT (fast shutdown) when the test binary dies without
// cleaning up (PR_SET_PDEATHSIG). In that last case its temp dir stays behind; the next
// [StartPostgres] on the machine removes such leftovers once their owner and server are gone.
// MariaDB and Vault servers work the same way ([MariaDB.Stop], [StartMariaDB]; [Vault.Stop],
// [StartVault]), except that the kernel sends them SIGKILL.
package testenv
