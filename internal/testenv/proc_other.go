//go:build unix && !linux

package testenv

import "syscall"

// setParentDeathSignal is a no-op outside Linux: a server whose test binary dies without calling
// Stop keeps running until killed by hand.
func setParentDeathSignal(*syscall.SysProcAttr) {}
