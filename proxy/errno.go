package proxy

import "syscall"

// errTooManyFiles is returned by accept when the process is out of file
// descriptors; accepting is retried after a pause instead of giving up.
const errTooManyFiles = syscall.EMFILE
