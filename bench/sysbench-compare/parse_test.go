//go:build linux

package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/credswap/credswap/bench/internal/benchkit"
)

var loginForTest = benchkit.Login{User: "bench", Password: "secret"}

// The files in testdata are the complete output of sysbench 1.0.20 runs against MariaDB 10.11
// (`sysbench oltp_point_select --tables=4 --table-size=100000 --rand-type=uniform --time=5 run`):
// 8 threads with --db-ps-mode=auto and =disable, a wrong password, and a run whose sessions were
// killed by `KILL USER` after 2 s.
func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseSysbench(t *testing.T) {
	for _, tc := range []struct {
		file string
		want sysbenchResult
	}{
		{"run-prepared.txt", sysbenchResult{TPS: 9557.63, QPS: 9557.63, Txns: 47819}},
		{"run-text.txt", sysbenchResult{TPS: 7316.29, QPS: 7316.29, Txns: 36610}},
	} {
		got, err := parseSysbench(readTestdata(t, tc.file))
		if err != nil {
			t.Errorf("%s: %v", tc.file, err)
			continue
		}
		if got != tc.want {
			t.Errorf("%s: parseSysbench = %+v, want %+v", tc.file, got, tc.want)
		}
		if err := got.check(); err != nil {
			t.Errorf("%s: check = %v", tc.file, err)
		}
	}
}

func TestParseSysbenchFailures(t *testing.T) {
	ok := readTestdata(t, "run-prepared.txt")
	for _, tc := range []struct {
		name, out, wantErr string
	}{
		{"access denied", readTestdata(t, "run-access-denied.txt"), "FATAL: unable to connect to MySQL server"},
		{"lost connection", readTestdata(t, "run-lost-connection.txt"), "FATAL: mysql_stmt_execute() returned error 2013"},
		{"no transactions line", strings.Replace(ok, "    transactions:", "    transaktions:", 1), "transactions: N"},
		{"no queries line", strings.Replace(ok, "    queries:  ", "    queeries:", 1), "queries: N"},
		{"no ignored errors line", strings.Replace(ok, "ignored errors:", "ignored:", 1), "ignored errors: N"},
		{"no reconnects line", strings.Replace(ok, "reconnects:", "reconnected:", 1), "reconnects: N"},
		{"empty", "", "transactions: N"},
	} {
		if _, err := parseSysbench(tc.out); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: err = %v, want one containing %q", tc.name, err, tc.wantErr)
		}
	}
}

func TestSysbenchCheck(t *testing.T) {
	ok := readTestdata(t, "run-prepared.txt")
	for _, tc := range []struct {
		name, out, wantErr string
	}{
		{"ignored errors", strings.Replace(ok, "ignored errors:                      0      (0.00 per sec.)", "ignored errors:                      3      (0.60 per sec.)", 1), "3 ignored errors"},
		{"reconnects", strings.Replace(ok, "reconnects:                          0      (0.00 per sec.)", "reconnects:                          8      (1.60 per sec.)", 1), "8 reconnects"},
		{"no transactions", strings.Replace(ok, "transactions:                        47819  (9557.63 per sec.)", "transactions:                        0      (0.00 per sec.)", 1), "no transactions"},
	} {
		r, err := parseSysbench(tc.out)
		if err != nil {
			t.Errorf("%s: parseSysbench = %v", tc.name, err)
			continue
		}
		if err := r.check(); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: check = %v, want an error containing %q", tc.name, err, tc.wantErr)
		}
	}
}

func TestRunArgs(t *testing.T) {
	got := runArgs(modeText, 8, 10, 4, 100000)
	want := []string{"--tables=4", "--table-size=100000", "--rand-type=uniform", "--threads=8", "--time=10",
		"--report-interval=0", "--db-ps-mode=disable", "oltp_point_select", "run"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("runArgs = %q, want %q", got, want)
	}
	if got := runArgs(modePrepared, 1, 1, 1, 1); !strings.Contains(strings.Join(got, " "), "--db-ps-mode=auto") {
		t.Errorf("runArgs of prepared = %q", got)
	}
}

func TestWriteConnFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "conn.cnf")
	if err := writeConnFile(file, "127.0.0.1:3307", loginForTest, "bench"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	want := "db-driver=mysql\nmysql-host=127.0.0.1\nmysql-port=3307\nmysql-user=bench\nmysql-password=secret\nmysql-db=bench\n"
	if string(b) != want {
		t.Errorf("option file:\n%s\nwant:\n%s", b, want)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("option file mode %v (%v), want 0600", fi.Mode(), err)
	}
	if err := writeConnFile(file, "no port", loginForTest, "bench"); err == nil {
		t.Error("writeConnFile accepted an address without a port")
	}
}

func TestRotate(t *testing.T) {
	for k, want := range [][]string{{"direct", "credswap"}, {"credswap", "direct"}, {"direct", "credswap"}} {
		if got := rotate(allTargets, k); !reflect.DeepEqual(got, want) {
			t.Errorf("rotate(%d) = %v, want %v", k, got, want)
		}
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-T", "5", "-modes", "text,prepared,text", "-threads", "8, 1,8"}, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	if o.seconds != 5 || o.rounds != 3 || o.tables != 4 || o.tableSize != 100000 ||
		!reflect.DeepEqual(o.modes, []string{"text", "prepared"}) || !reflect.DeepEqual(o.threads, []int{8, 1}) {
		t.Errorf("parseFlags = %+v", o)
	}
	if o, err := parseFlags(nil, &strings.Builder{}); err != nil || !reflect.DeepEqual(o.modes, allModes) || !reflect.DeepEqual(o.threads, []int{8}) {
		t.Errorf("parseFlags defaults = %+v, %v", o, err)
	}
	for _, args := range [][]string{
		{"-modes", "prepared,binary"},
		{"-modes", ""},
		{"-threads", "0"},
		{"-threads", ""},
		{"-T", "0"},
		{"-rounds", "0"},
		{"-table-size", "0"},
		{"extra"},
	} {
		if _, err := parseFlags(args, &strings.Builder{}); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
}

func TestRenderReport(t *testing.T) {
	o, err := parseFlags([]string{"-rounds", "3", "-modes", "prepared,text"}, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	r := newResults()
	add := func(mode, target string, round int, tps, cpu float64) {
		r.Add(cell{mode, 8, target}, sample{Round: round, Res: sysbenchResult{TPS: tps, QPS: tps, Txns: int64(tps * 10)}, CPUUS: cpu, HasCPU: cpu > 0})
	}
	add(modePrepared, targetDirect, 1, 1000, 0)
	add(modePrepared, targetDirect, 2, 1200, 0)
	add(modePrepared, targetDirect, 3, 1100, 0)
	add(modePrepared, targetCredswap, 1, 900, 30)
	add(modePrepared, targetCredswap, 2, 840, 32)
	add(modePrepared, targetCredswap, 3, 770, 31)
	add(modeText, targetDirect, 1, 1000, 0)
	add(modeText, targetDirect, 2, 1000, 0)
	r.Add(cell{modeText, 8, targetDirect}, sample{Round: 3, Err: errString("sysbench: FATAL: connection refused")})
	add(modeText, targetCredswap, 1, 700, 40)
	add(modeText, targetCredswap, 2, 720, 44)
	add(modeText, targetCredswap, 3, 710, 42)
	out := renderReport(header{}, o, r, false)
	for _, want := range []string{
		"| mode | threads | direct TPS | credswap TPS | credswap/direct | credswap/direct per round (r1, r2, r3) | median per-round ratio | ≥ 0.75× | credswap CPU µs/txn |",
		"| prepared | 8 | 1100 | 840 | 0.76 | 0.90, 0.70, 0.70 | 0.700 | **no** | 31.0 |",
		"| text | 8 | 1000 (2/3 ok) | 710 | 0.71 | 0.70, 0.72, – | 0.710 | **no** | 42.0 |",
		"**1 failed runs**",
		"round 3, text --threads=8, direct:",
		"connection refused",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

type errString string

func (e errString) Error() string { return string(e) }

func TestServerVersion(t *testing.T) {
	got := serverVersion("/usr/sbin/mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64 (Debian 12)", "/usr/sbin/mariadbd")
	if want := "mariadbd Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64 (Debian 12)"; got != want {
		t.Errorf("serverVersion = %q, want %q", got, want)
	}
}
