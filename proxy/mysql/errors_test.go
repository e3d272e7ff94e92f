package mysql

import (
	"errors"
	"io"
	"os"
	"syscall"
	"testing"

	"github.com/credswap/credswap/proxy"
)

// TestNoClientErrorNumbers: no error the proxy sends carries a number of
// the client libraries' range (2000–2999), which libmariadb reports as
// "2027 Received malformed packet".
func TestNoClientErrorNumbers(t *testing.T) {
	for c := proxy.CodeInternal; c <= proxy.CodeOutOfMemory; c++ {
		code, state := errorCode(c)
		if code >= 2000 && code <= 2999 || len(state) != 5 {
			t.Errorf("%s: %d (%s)", c, code, state)
		}
	}
	for _, c := range []proxy.Code{proxy.CodeBackendUnavailable, proxy.CodeBackendLost} {
		if code, state := errorCode(c); code != erServerShutdown || state != "08S01" {
			t.Errorf("%s: %d (%s), want 1053 (08S01)", c, code, state)
		}
	}
}

// TestConnectionEnded: only the peer or the network ending a connection
// counts as the database ending it; a deadline (Terminate) or a protocol
// failure does not.
func TestConnectionEnded(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{io.EOF, true},
		{io.ErrUnexpectedEOF, true},
		{&os.SyscallError{Syscall: "read", Err: syscall.ECONNRESET}, true},
		{syscall.EPIPE, true},
		{os.ErrDeadlineExceeded, false},
		{errors.New("malformed packet"), false},
	} {
		if got := connectionEnded(c.err); got != c.want {
			t.Errorf("%v: %v, want %v", c.err, got, c.want)
		}
		var gone *backendGoneError
		if got := errors.As(backendLost(c.err), &gone); got != c.want {
			t.Errorf("backendLost(%v) is a backendGoneError: %v, want %v", c.err, got, c.want)
		}
	}
}
