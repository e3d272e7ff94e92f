package benchkit

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestCommandLine(t *testing.T) {
	got := commandLine("swapbench", []string{"-T", "5", "-png", "", "-out", "a b", "-x", "it's"})
	want := `go run ./bench/swapbench -T 5 -png '' -out 'a b' -x 'it'\''s'`
	if got != want {
		t.Errorf("commandLine = %s, want %s", got, want)
	}
}

func TestFirstLine(t *testing.T) {
	ctx := context.Background()
	if got := FirstLine(ctx, "sh", "-c", "printf '\\n  v1.2  \\nsecond\\n'"); got != "v1.2" {
		t.Errorf("FirstLine = %q", got)
	}
	if got := FirstLine(ctx, "/nonexistent/prog", "--version"); !strings.HasPrefix(got, "(prog: ") {
		t.Errorf("FirstLine of a missing program = %q", got)
	}
}

func TestMachine(t *testing.T) {
	if got := cpuModel(); got == "" {
		t.Error("cpuModel is empty")
	}
	if got := LoadAverage(); got != "unknown" && len(strings.Fields(got)) != 3 {
		t.Errorf("LoadAverage = %q", got)
	}
}

func TestDescribeHost(t *testing.T) {
	h := DescribeHost(context.Background(), time.Unix(0, 0), "sysbench-compare", []string{"-rounds", "1"}, "go")
	if h.Command != "go run ./bench/sysbench-compare -rounds 1" || h.Postgres != "" || h.Pgbench != "" ||
		h.Cores < 1 || h.CPU == "" || h.LoadStart == "" || !h.Date.Equal(time.Unix(0, 0)) {
		t.Errorf("DescribeHost = %+v", h)
	}
}
