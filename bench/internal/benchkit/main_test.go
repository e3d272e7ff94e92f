package benchkit

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestMainArgs(t *testing.T) {
	type opts struct{ n int }
	parse := func(args []string, stderr io.Writer) (opts, error) {
		fs := NewFlagSet("tool", "usage: go run ./bench/tool [flags]", stderr)
		var o opts
		fs.IntVar(&o.n, "n", 1, "a number")
		return o, ParseFlags(fs, args)
	}
	for _, tc := range []struct {
		args       []string
		runErr     error
		wantCode   int
		wantRun    bool
		wantStderr string
	}{
		{args: []string{"-n", "2"}, wantCode: 0, wantRun: true},
		{args: []string{"-h"}, wantCode: 0, wantStderr: "usage: go run ./bench/tool [flags]\n  -n int\n"},
		{args: []string{"-x"}, wantCode: 2, wantStderr: "tool: flag provided but not defined: -x\n"},
		{args: []string{"extra"}, wantCode: 2, wantStderr: "tool: unexpected arguments [\"extra\"]\n"},
		{args: nil, runErr: errors.New("boom"), wantCode: 1, wantRun: true, wantStderr: "tool: boom\n"},
	} {
		var stdout, stderr strings.Builder
		ran := false
		run := func(ctx context.Context, o opts, out, errw io.Writer) error {
			ran = true
			if ctx.Err() != nil {
				t.Errorf("%q: context already done", tc.args)
			}
			if out != &stdout || errw != &stderr {
				t.Errorf("%q: run got other writers", tc.args)
			}
			return tc.runErr
		}
		code := mainArgs("tool", tc.args, &stdout, &stderr, parse, run)
		if code != tc.wantCode || ran != tc.wantRun {
			t.Errorf("%q: code %d, ran %v; want %d, %v", tc.args, code, ran, tc.wantCode, tc.wantRun)
		}
		if !strings.Contains(stderr.String(), tc.wantStderr) || (tc.wantStderr == "" && stderr.Len() > 0) {
			t.Errorf("%q: stderr %q, want it to hold %q", tc.args, stderr.String(), tc.wantStderr)
		}
	}
}
