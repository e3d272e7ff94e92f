package testenv

import "syscall"

// setMariaDBDeathSignal asks the kernel to SIGKILL mariadbd when the thread that started it exits
// (in practice: when the test binary dies without stopping it). SIGKILL rather than the SIGTERM of
// Stop: the data is thrown away, and a normal shutdown that hung would leave a server nobody
// waits for.
func setMariaDBDeathSignal(attr *syscall.SysProcAttr) { attr.Pdeathsig = syscall.SIGKILL }
