package main

import (
	"fmt"
	"runtime"
	"testing"
)

// TestVersionStamped checks what `credswap version` prints for values
// stamped with -ldflags -X (scripts/image.sh stamps these three).
func TestVersionStamped(t *testing.T) {
	saved := [3]string{version, commit, date}
	t.Cleanup(func() { version, commit, date = saved[0], saved[1], saved[2] })
	version, commit, date = "v1.2.3", "0123456789abcdef0123456789abcdef01234567", "2026-11-25T18:00:00Z"
	out, err := cli(t, "version")
	want := fmt.Sprintf("credswap v1.2.3 (commit 0123456789abcdef0123456789abcdef01234567, built 2026-11-25T18:00:00Z, %s %s/%s)\n",
		runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if err != nil || out != want {
		t.Fatalf("version: %v\n got %q\nwant %q", err, out, want)
	}
	if b := binaryInfo(); b.Version != "v1.2.3" || b.GoVersion != runtime.Version() || buildVersion() != "v1.2.3" {
		t.Fatalf("binaryInfo: %+v, buildVersion %q", b, buildVersion())
	}
}
