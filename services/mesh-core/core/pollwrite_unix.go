//go:build unix

package core

import (
	"syscall"
	"unsafe"
)

// errWouldBlock: the socket's send buffer is full.
var errWouldBlock = syscall.EAGAIN

// writeNow writes b to the non-blocking socket fd as far as it takes it,
// without waiting: a parked poll's connection has nothing else in flight,
// and its answer nearly always fits. The caller holds the connection's
// lock, under which netpoll's close callback runs before the fd closes.
// The write never blocks, so it is a raw system call (as netpoll's are).
func writeNow(fd int, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[n])), uintptr(len(b)-n))
		switch {
		case errno == syscall.EINTR:
			continue
		case errno != 0:
			return n, errno
		case int(m) <= 0:
			return n, errWouldBlock
		}
		n += int(m)
	}
	return n, nil
}
