package testenv

import "syscall"

// setParentDeathSignal asks the kernel to send the server SIGINT (fast shutdown) when the thread
// that started it exits. startServer keeps that thread locked and alive until the server exits, so
// in practice this fires only when the whole test binary dies without stopping its servers.
func setParentDeathSignal(attr *syscall.SysProcAttr) { attr.Pdeathsig = syscall.SIGINT }
