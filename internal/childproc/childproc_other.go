//go:build !linux

package childproc

import "syscall"

// DieWithParent asks nothing of the child where the kernel cannot tie it
// to its parent's life (macOS, the BSDs): it is stopped by its parent's
// normal shutdown only.
func DieWithParent() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
