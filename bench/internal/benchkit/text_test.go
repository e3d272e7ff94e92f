package benchkit

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestIndent(t *testing.T) {
	if got, want := Indent("a\nb"), "    a\n    b"; got != want {
		t.Errorf("Indent = %q, want %q", got, want)
	}
	if got, want := IndentWith("a\n\nb", "  "), "  a\n  \n  b"; got != want {
		t.Errorf("IndentWith = %q, want %q", got, want)
	}
}

func TestLastLines(t *testing.T) {
	for _, tc := range []struct {
		s    string
		n    int
		want string
	}{
		{"a\nb\nc\n\n", 2, "b\nc"},
		{"a\nb", 5, "a\nb"},
		{"", 3, ""},
	} {
		if got := LastLines(tc.s, tc.n); got != tc.want {
			t.Errorf("LastLines(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.want)
		}
	}
}

func TestTruncate(t *testing.T) {
	if got := Truncate("hello", 3); got != "hel…" {
		t.Errorf("Truncate = %q", got)
	}
	if got := Truncate("hi", 2); got != "hi" {
		t.Errorf("Truncate = %q", got)
	}
}

func TestSplitList(t *testing.T) {
	if got, want := SplitList(" a, ,b,, c "), []string{"a", "b", "c"}; !reflect.DeepEqual(got, want) {
		t.Errorf("SplitList = %q, want %q", got, want)
	}
	if got := SplitList(" , "); got != nil {
		t.Errorf("SplitList of nothing = %q", got)
	}
}

func TestFileTail(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "log")
	var b strings.Builder
	for i := range 40 {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	got := fileTail(file)
	if lines := strings.Split(got, "\n"); len(lines) != 30 || lines[0] != "line 10" || lines[29] != "line 39" {
		t.Errorf("fileTail = %q", got)
	}

	// Only the last 4 KiB are read.
	long := strings.Repeat("x", 5000) + "\nend\n"
	if err := os.WriteFile(file, []byte(long), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := fileTail(file); len(got) > logTailBytes || !strings.HasSuffix(got, "\nend") {
		t.Errorf("fileTail of a long line: %d bytes ending %q", len(got), got[max(0, len(got)-10):])
	}

	if got := fileTail(filepath.Join(dir, "missing")); !strings.HasPrefix(got, "(no log: ") {
		t.Errorf("fileTail of a missing file = %q", got)
	}
}

func TestTempDir(t *testing.T) {
	dir, remove, err := TempDir("benchkit-test-")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(filepath.Base(dir), "benchkit-test-") {
		t.Errorf("TempDir = %s", dir)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s still there after remove: %v", dir, err)
	}
}
