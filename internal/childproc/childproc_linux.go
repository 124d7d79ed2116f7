package childproc

import "syscall"

// DieWithParent makes a child process killed when its parent dies, so that
// no orphan keeps ports and data folders after a crash or a Ctrl-C.
func DieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
