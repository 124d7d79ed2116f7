//go:build linux && !portablepoll

package core

import (
	"errors"
	"maps"
	"net"
	"slices"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sockets is the poll port's own event loop on Linux: one epoll instance
// and one goroutine read every connection, into one scratch buffer. A
// connection costs its file descriptor and its pconn, no buffer: what a
// poll sends is parsed from the scratch buffer, and only the start of an
// unfinished head is kept. The loop reads nothing while a change is being
// written to the polls it released (PollServer.readGate): the answers go
// out before the polls they cause are read, so a change reaches every
// waiting data plane in the time its answers take to write, not that time
// plus the time to read the next polls.
//
// Built with the tag portablepoll, the port uses pollsock_other.go here too
// (to test that loop on Linux).
type sockets struct {
	s    *PollServer
	epfd int
	wake int // an eventfd that ends the loop

	mu    sync.Mutex
	conns map[int32]*pconn // by file descriptor
}

// parksWithoutGoroutine: a parked poll holds no goroutine on this loop.
const parksWithoutGoroutine = true

func newSockets(s *PollServer) (*sockets, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}); err != nil {
		unix.Close(epfd)
		unix.Close(wake)
		return nil, err
	}
	return &sockets{s: s, epfd: epfd, wake: wake, conns: map[int32]*pconn{}}, nil
}

// add takes an accepted connection over: its socket is kept by a
// duplicate descriptor on the loop's epoll, and Go's own poller lets it go.
func (k *sockets) add(c net.Conn) error {
	defer c.Close()
	sc, ok := c.(syscall.Conn)
	if !ok {
		return errors.New("not a socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	fd := -1
	cerr := rc.Control(func(orig uintptr) {
		// The duplicate shares the socket's open file description, so it
		// is non-blocking as the original (and TCP_NODELAY stays set).
		fd, err = unix.FcntlInt(orig, unix.F_DUPFD_CLOEXEC, 0)
	})
	if err = errors.Join(cerr, err); err != nil {
		return err
	}
	pc := k.s.open(&fdSock{k: k, fd: fd})
	k.mu.Lock()
	k.conns[int32(fd)] = pc
	k.mu.Unlock()
	if err := unix.EpollCtl(k.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd)}); err != nil {
		pc.mu.Lock()
		pc.closing = true
		pc.unlock()
		return err
	}
	return nil
}

// run reads the connections until stop.
func (k *sockets) run() {
	events := make([]unix.EpollEvent, 256)
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.EpollWait(k.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		// Answers of a change go out before any poll is read.
		k.s.readGate.RLock()
		for _, ev := range events[:n] {
			if ev.Fd == int32(k.wake) {
				k.s.readGate.RUnlock()
				return
			}
			k.mu.Lock()
			pc := k.conns[ev.Fd]
			k.mu.Unlock()
			if pc != nil {
				k.ready(pc, ev.Events, buf)
			}
		}
		k.s.readGate.RUnlock()
	}
}

// ready serves what epoll said of pc's socket.
func (k *sockets) ready(pc *pconn, events uint32, buf []byte) {
	pc.mu.Lock()
	defer pc.unlock()
	if pc.shut {
		return
	}
	fs := pc.sock.(*fdSock)
	if events&unix.EPOLLOUT != 0 && fs.rest != nil {
		fs.flushMore(pc)
	}
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) == 0 {
		return
	}
	n, err := unix.Read(fs.fd, buf)
	switch {
	case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
	case err != nil || n == 0: // gone, or the client closed its side
		pc.closing = true
	default:
		pc.received(buf[:n])
	}
}

// stop ends the loop and closes every connection left.
func (k *sockets) stop() {
	var one [8]byte
	one[0] = 1
	_, _ = unix.Write(k.wake, one[:])
}

// closeAll closes what is left once the loop has ended, and the loop's own
// descriptors.
func (k *sockets) closeAll() {
	k.mu.Lock()
	pcs := slices.Collect(maps.Values(k.conns))
	k.mu.Unlock()
	closeEach(pcs)
	unix.Close(k.epfd)
	unix.Close(k.wake)
}

// fdSock is one connection's socket on the loop.
type fdSock struct {
	k    *sockets
	fd   int
	rest []byte // of an answer the socket did not take whole
}

// write writes what the socket takes now. The caller holds the
// connection's lock, under which the descriptor is closed, so it cannot be
// another connection's by then. The write never blocks, so it is a raw
// system call.
func (f *fdSock) write(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(f.fd), uintptr(unsafe.Pointer(&b[n])), uintptr(len(b)-n))
		switch {
		case errno == syscall.EINTR:
			continue
		case errno == syscall.EAGAIN:
			return n, errWouldBlock
		case errno != 0:
			return n, errno
		case int(m) <= 0:
			return n, errWouldBlock
		}
		n += int(m)
	}
	return n, nil
}

// flush writes b when the socket takes more: the loop is told to watch for
// room. mu is held.
func (f *fdSock) flush(pc *pconn, b []byte) {
	f.rest = b
	if err := unix.EpollCtl(f.k.epfd, unix.EPOLL_CTL_MOD, f.fd,
		&unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP, Fd: int32(f.fd)}); err != nil {
		f.rest = nil
		pc.flushed(err)
	}
}

// flushMore writes more of the rest, on the loop when the socket has room;
// mu is held.
func (f *fdSock) flushMore(pc *pconn) {
	n, err := f.write(f.rest)
	f.rest = f.rest[n:]
	if errors.Is(err, errWouldBlock) {
		return
	}
	f.rest = nil
	if err == nil {
		err = unix.EpollCtl(f.k.epfd, unix.EPOLL_CTL_MOD, f.fd,
			&unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(f.fd)})
	}
	pc.flushed(err)
}

// close takes the socket off the loop and closes it; mu is held.
func (f *fdSock) close() {
	f.k.mu.Lock()
	delete(f.k.conns, int32(f.fd))
	f.k.mu.Unlock()
	_ = unix.EpollCtl(f.k.epfd, unix.EPOLL_CTL_DEL, f.fd, nil)
	_ = unix.Close(f.fd)
}
