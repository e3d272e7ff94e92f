package benchkit

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Main runs a benchmark command named tool and returns its exit code: parse reads the flags
// from os.Args (0 for -h, 2 for bad flags), then run gets a context that ends on the first
// SIGINT or SIGTERM so that the benchmark can clean up (1 if it fails). A second signal gets the
// default action and stops the program at once. Errors are printed to stderr as "tool: error".
func Main[O any](tool string, parse func(args []string, stderr io.Writer) (O, error), run func(ctx context.Context, o O, stdout, stderr io.Writer) error) int {
	return mainArgs(tool, os.Args[1:], os.Stdout, os.Stderr, parse, run)
}

func mainArgs[O any](tool string, args []string, stdout, stderr io.Writer, parse func([]string, io.Writer) (O, error), run func(context.Context, O, io.Writer, io.Writer) error) int {
	o, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, tool+":", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After the first signal the benchmark cleans up; a second one gets the default action.
	context.AfterFunc(ctx, stop)
	if err := run(ctx, o, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, tool+":", err)
		return 1
	}
	return 0
}

// NewFlagSet returns the flag set of a benchmark command named tool: errors and help go to
// stderr, and -h prints usage (one line on how to run it) and then the flags.
func NewFlagSet(tool, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(tool, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, usage)
		fs.PrintDefaults()
	}
	return fs
}

// ParseFlags parses args with fs and rejects arguments left after the flags.
func ParseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return nil
}
