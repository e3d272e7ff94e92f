// Package benchkit holds what the benchmark commands under bench/ (pgbench-compare, swapbench
// and sysbench-compare) share: running server programs as child processes that stop with the
// benchmark, building credswap from the working tree, starting it and waiting for its /readyz,
// logging in to PostgreSQL with a configuration built from arguments alone, the machine and
// version fields of a report header, the signal handling of a command's main, and small text
// helpers.
//
// The process parts (Process, StartProcess, StartCredswap, WaitReadyz) are Linux-only, like the
// commands: a child gets a parent-death signal (PR_SET_PDEATHSIG). The rest builds everywhere.
package benchkit
