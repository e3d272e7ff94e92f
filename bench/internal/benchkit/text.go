package benchkit

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// logTailBytes is how much of the end of a log file fileTail reads.
const logTailBytes = 4096

// Indent prefixes every line of s with four spaces.
func Indent(s string) string { return IndentWith(s, "    ") }

// IndentWith prefixes every line of s with prefix.
func IndentWith(s, prefix string) string {
	return prefix + strings.ReplaceAll(s, "\n", "\n"+prefix)
}

// LastLines returns the last n lines of s, without trailing blank lines.
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Truncate returns s cut to its first n bytes, with "…" appended if anything was cut.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// SplitList splits a comma-separated flag value into its fields, trimmed of white space,
// leaving out empty ones.
func SplitList(s string) []string {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// fileTail returns at most the last 30 lines of the last 4 KiB of file, or why it cannot.
func fileTail(file string) string {
	f, err := os.Open(file)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	off := max(0, fi.Size()-logTailBytes)
	b, err := io.ReadAll(io.NewSectionReader(f, off, fi.Size()-off))
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return LastLines(string(b), 30)
}

// TempDir creates a new directory in the system's temp dir, its name starting with prefix, and
// returns it with a function that removes it and everything in it; that function's error names
// the directory.
func TempDir(prefix string) (dir string, remove func() error, err error) {
	dir, err = os.MkdirTemp("", prefix)
	if err != nil {
		return "", nil, err
	}
	return dir, func() error {
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("remove %s: %w", dir, err)
		}
		return nil
	}, nil
}
