//go:build !linux

package testenv

import "syscall"

// setMariaDBDeathSignal is a no-op outside Linux: a MariaDB server whose test binary dies without
// calling Stop keeps running until killed by hand.
func setMariaDBDeathSignal(*syscall.SysProcAttr) {}
