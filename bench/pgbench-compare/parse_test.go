//go:build linux

package main

import (
	"reflect"
	"strings"
	"testing"
)

const pgbenchOK = `pgbench (15.20 (Debian 15.20-0+deb12u1))
transaction type: <builtin: select only>
scaling factor: 10
query mode: prepared
number of clients: 8
number of threads: 2
maximum number of tries: 1
duration: 10 s
number of transactions actually processed: 168915
number of failed transactions: 0 (0.000%)
latency average = 0.474 ms
initial connection time = 21.528 ms
tps = 16891.734567 (without initial connection time)
`

func TestParsePgbench(t *testing.T) {
	got, err := parsePgbench(pgbenchOK)
	if err != nil {
		t.Fatal(err)
	}
	if want := (pgbenchResult{TPS: 16891.734567, Txns: 168915}); got != want {
		t.Errorf("parsePgbench = %+v, want %+v", got, want)
	}

	for _, tc := range []struct {
		name, out, wantErr string
	}{
		{"failed transactions", strings.Replace(pgbenchOK, "failed transactions: 0 (0.000%)", "failed transactions: 12 (0.007%)", 1), "12 failed"},
		{"no failed line", strings.Replace(pgbenchOK, "number of failed transactions: 0 (0.000%)\n", "", 1), "number of failed transactions"},
		{"no tps", strings.Replace(pgbenchOK, "tps = ", "tbs = ", 1), "tps = N"},
		{"no transactions", strings.Replace(pgbenchOK, "processed: 168915", "processed: 0", 1), "no transactions"},
		{"empty", "", "number of failed transactions"},
	} {
		if _, err := parsePgbench(tc.out); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: err = %v, want one containing %q", tc.name, err, tc.wantErr)
		}
	}
}

func TestRotate(t *testing.T) {
	xs := []string{"direct", "credswap", "pgbouncer"}
	for k, want := range [][]string{
		{"direct", "credswap", "pgbouncer"},
		{"credswap", "pgbouncer", "direct"},
		{"pgbouncer", "direct", "credswap"},
		{"direct", "credswap", "pgbouncer"},
	} {
		if got := rotate(xs, k); !reflect.DeepEqual(got, want) {
			t.Errorf("rotate(%v, %d) = %v, want %v", xs, k, got, want)
		}
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-T", "5", "-modes", "prepared,simple", "-clients", "8, 1,8", "-targets", "pgbouncer,direct"}, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	if o.seconds != 5 || o.rounds != 3 || o.scale != 10 ||
		!reflect.DeepEqual(o.modes, []string{"prepared", "simple"}) ||
		!reflect.DeepEqual(o.clients, []int{8, 1}) ||
		!reflect.DeepEqual(o.targets, []string{"pgbouncer", "direct"}) {
		t.Errorf("parseFlags = %+v", o)
	}
	for _, args := range [][]string{
		{"-modes", "simple,batch"},
		{"-clients", "0"},
		{"-clients", ""},
		{"-targets", "odyssey"},
		{"-T", "0"},
		{"extra"},
	} {
		if _, err := parseFlags(args, &strings.Builder{}); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
}

func TestRenderReportFailures(t *testing.T) {
	o, err := parseFlags([]string{"-rounds", "2", "-modes", "prepared", "-clients", "8"}, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	r := newResults()
	r.Add(cell{"prepared", 8, targetDirect}, sample{Round: 1, Res: pgbenchResult{TPS: 1000, Txns: 10000}})
	r.Add(cell{"prepared", 8, targetDirect}, sample{Round: 2, Res: pgbenchResult{TPS: 1200, Txns: 12000}})
	r.Add(cell{"prepared", 8, targetCredswap}, sample{Round: 1, Res: pgbenchResult{TPS: 900, Txns: 9000}, CPUUS: 20, HasCPU: true})
	r.Add(cell{"prepared", 8, targetCredswap}, sample{Round: 2, Err: errString("pgbench: connection refused")})
	r.Add(cell{"prepared", 8, targetPgbouncer}, sample{Round: 1, Err: errString("boom")})
	r.Add(cell{"prepared", 8, targetPgbouncer}, sample{Round: 2, Err: errString("boom")})
	out := renderReport(header{}, o, r, false)
	for _, want := range []string{
		"| prepared | 8 | 1100 | 900 (1/2 ok) | FAIL (0/2) | 0.82 | – | – | 20.0 | – |",
		"**3 failed runs**",
		"round 2, -M prepared -c 8, credswap:",
		"connection refused",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

type errString string

func (e errString) Error() string { return string(e) }
