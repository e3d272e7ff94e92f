// Package clientmatrix holds the real-client matrix: tests that run the
// drivers applications use (psql, psycopg2, psycopg 3, pgjdbc and
// node-postgres for PostgreSQL; the mariadb CLI, PyMySQL, mysqlclient,
// MariaDB Connector/J and mysql2 for MariaDB) through credswap, each once
// plainly and once while the backend credential alternates between two
// users every second.
//
// The package has no code outside its tests. Each client is a small
// program in testdata/ (Python scripts, one Java file compiled at test
// time, Node.js scripts, SQL scripts that the tests feed to psql and the
// mariadb CLI) that does an application's work on one long-lived
// connection: transactions that commit and roll back, parameterised and
// server-side prepared statements, session settings it relies on later, a
// value larger than 1 MiB both ways, an error followed by further use of
// the connection, and the driver's pool where it has one. It checks every
// answer and exits non-zero on a mismatch. While the credential
// alternates, it repeats that work for several seconds and must see
// current_user (CURRENT_USER() on MariaDB) change under it.
//
// docs/testing.md describes the matrix and how to run one client.
package clientmatrix
