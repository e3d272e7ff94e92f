//go:build linux

// Command pgbench-compare measures the throughput and CPU cost of credswap against a direct
// connection to PostgreSQL and against PgBouncer in session mode, with pgbench's select-only
// workload.
//
// Usage, from the repository root:
//
//	scripts/deps.sh bench              # installs pgbouncer (and the PostgreSQL programs)
//	go run ./bench/pgbench-compare [-T 10] [-rounds 3] [-modes simple,extended,prepared]
//	    [-clients 1,8,32] [-scale 10] [-targets direct,credswap,pgbouncer] [-out FILE]
//
// It starts a throwaway PostgreSQL server (internal/testenv), creates the database and the
// LOGIN role "bench" (random scram-sha-256 password) and loads it with `pgbench -i -s SCALE`.
// It builds credswap from ./cmd/proxy and runs the binary as a separate process with a generated
// configuration whose local password differs from the backend one, and runs pgbouncer (as the
// "postgres" OS user when started as root) with pool_mode=session and auth_type=scram-sha-256.
// Both are awaited by readiness checks (GET /readyz, a login), never by sleeping.
//
// Then, for every round, protocol mode (-M) and client count, it runs
//
//	pgbench -S -n -T SECS -c CLIENTS -j min(CLIENTS,2) -M MODE
//
// against each target back to back, rotating the order of the targets every round so that drift
// on the machine affects them alike. A run counts only if pgbench exits cleanly and reports
// "number of failed transactions: 0". For the proxies, the CPU time of the proxy process
// (utime+stime from /proc/PID/stat, in CLK_TCK ticks) is read before and after each run and
// divided by the transactions pgbench processed. A failed run is reported and the benchmark
// goes on.
//
// The report is a markdown table of medians (TPS per target, the ratios between them, proxy
// CPU µs per transaction) under a header naming the date, machine, versions and command line;
// it goes to stdout and, with -out, to a file. Progress goes to stderr.
//
// Every process and temp dir is removed at the end, on error and on Ctrl-C (SIGINT or SIGTERM;
// the partial results are printed). A second Ctrl-C stops at once; the servers then get a
// parent-death signal.
package main
