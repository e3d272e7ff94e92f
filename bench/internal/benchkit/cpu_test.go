//go:build linux

package benchkit

import "testing"

func TestParseStatTicks(t *testing.T) {
	// Fields 14 (utime) and 15 (stime) are 250 and 75; the command name holds ") (" to show that
	// fields are counted from the last ')'.
	stat := "1234 (cred) (swap) S 1 1234 1234 0 -1 4194560 3052 0 0 0 250 75 0 0 20 0 9 0 123 1000 200\n"
	got, err := ParseStatTicks(stat)
	if err != nil {
		t.Fatal(err)
	}
	if got != 325 {
		t.Errorf("ParseStatTicks = %d, want 325", got)
	}
	if _, err := ParseStatTicks("1234 (short) S 1 2"); err == nil {
		t.Error("ParseStatTicks accepted a truncated line")
	}
	if _, err := ParseStatTicks("garbage"); err == nil {
		t.Error("ParseStatTicks accepted a line without a command name")
	}
}
