//go:build linux

// Command sysbench-compare measures the throughput and CPU cost of credswap's MySQL/MariaDB
// relay against a direct connection, with sysbench's oltp_point_select workload.
//
// Usage, from the repository root:
//
//	scripts/deps.sh                    # installs the MariaDB server and client and sysbench
//	go run ./bench/sysbench-compare [-T 10] [-rounds 3] [-modes prepared,text] [-threads 8]
//	    [-tables 4] [-table-size 100000] [-out FILE]
//
// It starts a throwaway MariaDB server (internal/testenv), creates the database "bench" and the
// account 'bench'@'%' (random mysql_native_password password, every privilege on the database)
// and loads it with `sysbench oltp_point_select prepare` (uniform keys). It builds credswap from
// ./cmd/proxy and runs the binary as a separate process with a generated configuration: one
// mysql backend, a local password for "bench" that differs from the backend one, client auth
// mysql_native_password (sysbench's libmariadb cannot do caching_sha2_password's full
// authentication over plaintext TCP). credswap is awaited by GET /readyz, never by sleeping.
//
// Then, for every round, mode and thread count, it runs
//
//	sysbench oltp_point_select --threads=N --time=SECS --db-ps-mode=auto|disable run
//
// against the direct connection and credswap back to back, in an order alternated every round so
// that drift on the machine affects both alike. The connection and password go to sysbench in an
// option file (--config-file), never on a command line. A run counts only if sysbench exits
// cleanly, prints no FATAL line and reports 0 ignored errors and 0 reconnects. credswap's CPU time
// (utime+stime from /proc/PID/stat, in CLK_TCK ticks) is read before and after each run and
// divided by the transactions sysbench processed. A failed run is reported and the benchmark
// goes on.
//
// The report is a markdown table of medians (TPS per target, credswap/direct of the medians and
// per round, whether the median per-round ratio meets 0.75×, credswap CPU µs per transaction)
// under a header naming the date, machine, versions, code and command line; it goes to stdout
// and, with -out, to a file.
// Progress goes to stderr.
//
// Every process and temp dir is removed at the end, on error and on Ctrl-C (SIGINT or SIGTERM;
// the partial results are printed). A second Ctrl-C stops at once; the servers then get a
// parent-death signal.
package main
