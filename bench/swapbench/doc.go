//go:build linux

// Command swapbench measures credswap's live credential swap: what moving one session to a new
// backend connection costs, and what a rotation does to the latency of a loaded proxy.
//
// Usage, from the repository root:
//
//	go run ./bench/swapbench [-k 200] [-r 5] [-T 60] [-rotate-at 20,40] [-clients 16]
//	    [-threads 2] [-scale 10] [-parts switch,load] [-out DIR] [-png FILE]
//
// It starts a throwaway PostgreSQL server (internal/testenv) with a database "bench" owned by
// the NOLOGIN role bench_owner and two LOGIN roles, swap_a and swap_b, that are members of
// bench_owner and have `ALTER ROLE … SET role = 'bench_owner'`, so whichever of them logs in
// acts as bench_owner and uses the same pgbench tables. It loads the tables with
// `pgbench -i -s SCALE` as swap_a. It builds credswap from ./cmd/proxy and runs the binary as a
// separate process with log level debug (JSON), the backend credential read from a file, and a
// local password for the client user "bench" that differs from both backend passwords.
//
// A rotation is what an operator with two alternating users does: as the superuser,
// `ALTER ROLE <the other user> PASSWORD '<random>'`, then replace the credential file
// atomically (write a temp file, rename it over the watched path). The benchmark then polls
// GET /v1/status until the new generation is the only one with sessions and the drain is
// complete.
//
// Part 1 (switch cost): K idle sessions through the proxy with pgx, each holding typical state
// (search_path, statement_timeout, a custom setting app.tenant, two protocol-level prepared
// statements, one LISTEN channel). R rotations; after each, every session is checked (its
// session_user is the new user, its settings survived, both prepared statements execute, and a
// NOTIFY on its channel reaches it). The per-session switch time is the "took" field of
// credswap's debug log line "session switched"; the drain timeline comes from /v1/status.
//
// Part 2 (latency under load): `pgbench -c 16 -j 2 -T 60 -P 1 -M prepared --log` (TPC-B-like)
// through the proxy with rotations at t≈20 s and t≈40 s. The per-transaction logs give TPS and
// p50/p99 latency per second, the p99 of the steady-state seconds (5–18, 25–38, 45–58 by
// default) and of the 2 s starting at each rotation.
//
// The report is markdown on stdout (and DIR/report.md); DIR also gets the per-second CSV
// (swap-latency.csv) and the credswap log. With gnuplot installed the per-second TPS and p99
// are plotted to -png (default bench/swap-latency.png); without it the command to install it is
// printed and everything else still runs. Progress goes to stderr.
//
// Every process and temp dir is removed at the end, on error and on Ctrl-C (SIGINT or SIGTERM).
// A second Ctrl-C stops at once; the servers then get a parent-death signal.
package main
