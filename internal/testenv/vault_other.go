//go:build !linux

package testenv

import (
	"context"
	"syscall"
)

// setVaultDeathSignal is a no-op outside Linux: a Vault server whose test binary dies without
// calling Stop keeps running until killed by hand.
func setVaultDeathSignal(*syscall.SysProcAttr) {}

// waitStopped cannot see thread states outside Linux; Pause returns right after sending SIGSTOP,
// and a request sent at once may still be answered.
func waitStopped(context.Context, int) error { return nil }
