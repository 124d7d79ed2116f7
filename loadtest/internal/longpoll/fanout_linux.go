//go:build linux

package longpoll

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// On Linux the pollers are non-blocking sockets, each owned by one of a few
// epoll loops (level-triggered). A loop's round: epoll_wait; read every
// socket it reported (one recvmsg each, into the loop's buffer; a poller
// keeps a buffer of its own only while an answer comes in pieces) and time
// each answer by the kernel's receive stamp of the read that completed it; then write the next poll of each poller answered;
// then dial the pollers Start handed over and those whose retry is due.

// driver is the epoll loops of a Fanout.
type driver struct {
	loops    []*loop
	sa       syscall.Sockaddr
	family   int
	stopOnce sync.Once
}

// conn is a poller's connection, as its loop keeps it.
type conn struct {
	fd         int  // -1: none (not dialled yet, or waiting to dial again)
	connecting bool // dialled, not yet connected
	req        []byte
	plen       int    // req[:plen] is "GET <target>"; each poll appends the rest
	in         []byte // an answer read in pieces so far; nil until one was
}

// loop is one epoll loop and the pollers i with i % len(loops) == its index.
type loop struct {
	f      *Fanout
	index  int
	ep     int
	wakeR  int // a pipe: Start and Stop write a byte to wake the loop
	wakeW  int
	sa     syscall.Sockaddr // the server's; each loop has its own (Connect writes its raw form into it)
	events []syscall.EpollEvent
	buf    []byte
	oob    []byte  // a read's control message: its receive time stamp
	ready  []int   // pollers answered (or connected) this round: their next poll is due
	retry  []retry // pollers to dial again, in the order they are due

	mu    sync.Mutex
	added []int // pollers Start handed over, not dialled yet
}

type retry struct {
	i   int
	due int64 // Unix ns
}

const (
	wakeTag   = -1       // the epoll data of a loop's wake pipe (a poller's is its index)
	loopBuf   = 64 << 10 // each loop's read buffer
	maxEvents = 512
)

var (
	errEOF        = errors.New("the server closed the connection")
	errExtra      = errors.New("bytes after the response (one poll is in flight at a time)")
	errShortWrite = errors.New("the socket took only part of a poll (its send buffer, empty between polls, should hold it)")
)

func (f *Fanout) startDriver() error {
	a, err := net.ResolveTCPAddr("tcp", f.cfg.Addr)
	if err != nil {
		return err
	}
	if ip4 := a.IP.To4(); ip4 != nil {
		f.sa, f.family = &syscall.SockaddrInet4{Port: a.Port, Addr: [4]byte(ip4)}, syscall.AF_INET
	} else {
		f.sa, f.family = &syscall.SockaddrInet6{Port: a.Port, Addr: [16]byte(a.IP.To16())}, syscall.AF_INET6
	}
	n := f.cfg.Loops
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	n = max(1, min(n, len(f.pollers)))
	for i := range f.pollers {
		f.pollers[i].conn.fd = -1
	}
	for k := range n {
		l, err := newLoop(f, k)
		if err != nil {
			f.closeLoops()
			return err
		}
		f.loops = append(f.loops, l)
	}
	for _, l := range f.loops {
		f.wg.Go(l.run)
	}
	return nil
}

func newLoop(f *Fanout, index int) (*loop, error) {
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		syscall.Close(ep)
		return nil, fmt.Errorf("pipe2: %w", err)
	}
	l := &loop{f: f, index: index, ep: ep, wakeR: p[0], wakeW: p[1],
		events: make([]syscall.EpollEvent, maxEvents), buf: make([]byte, loopBuf),
		oob: make([]byte, syscall.CmsgSpace(int(unsafe.Sizeof(syscall.Timespec{}))))}
	switch sa := f.sa.(type) {
	case *syscall.SockaddrInet4:
		l.sa = &syscall.SockaddrInet4{Port: sa.Port, Addr: sa.Addr}
	case *syscall.SockaddrInet6:
		l.sa = &syscall.SockaddrInet6{Port: sa.Port, Addr: sa.Addr}
	}
	if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, l.wakeR, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: wakeTag}); err != nil {
		l.closeFDs()
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	return l, nil
}

// launch hands poller i to its loop, which dials it.
func (f *Fanout) launch(i int) {
	l := f.loops[i%len(f.loops)]
	l.mu.Lock()
	first := len(l.added) == 0
	l.added = append(l.added, i)
	l.mu.Unlock()
	if first { // otherwise a wake-up is on its way
		l.wakeUp()
	}
}

// Stop ends every poll and waits for the pollers. Safe to call twice.
func (f *Fanout) Stop() {
	f.stopOnce.Do(func() {
		f.stopped.Store(true)
		for _, l := range f.loops {
			l.wakeUp()
		}
		f.wg.Wait()
		f.closeLoops()
	})
	f.wg.Wait()
}

func (f *Fanout) closeLoops() {
	for _, l := range f.loops {
		l.closeFDs()
	}
	f.loops = nil
}

func (l *loop) closeFDs() {
	syscall.Close(l.ep)
	syscall.Close(l.wakeR)
	syscall.Close(l.wakeW)
}

func (l *loop) wakeUp() {
	for {
		_, err := syscall.Write(l.wakeW, []byte{1})
		if err != syscall.EINTR {
			return // EAGAIN: the pipe is full of wake-ups already
		}
	}
}

func (l *loop) drainWake() {
	var b [64]byte
	for {
		n, err := syscall.Read(l.wakeR, b[:])
		if n <= 0 && err != syscall.EINTR {
			return
		}
	}
}

// run is the loop, until Stop; it closes its pollers' sockets on the way out.
func (l *loop) run() {
	defer l.closeAll()
	for !l.f.stopped.Load() {
		timeout := -1
		if len(l.retry) > 0 {
			timeout = int(max(0, (l.retry[0].due-time.Now().UnixNano()+int64(time.Millisecond)-1)/int64(time.Millisecond)))
		}
		n, err := syscall.EpollWait(l.ep, l.events, timeout)
		if err != nil && err != syscall.EINTR {
			l.f.addError(fmt.Errorf("epoll_wait: %w", err))
			return
		}
		if l.f.stopped.Load() {
			return
		}
		l.ready = l.ready[:0]
		for _, ev := range l.events[:max(n, 0)] {
			if ev.Fd == wakeTag {
				l.drainWake()
				continue
			}
			l.event(int(ev.Fd), ev.Events)
		}
		for _, i := range l.ready {
			l.send(i)
		}
		l.dialAdded()
		l.dialDue()
	}
}

func (l *loop) closeAll() {
	for i := l.index; i < len(l.f.pollers); i += len(l.f.loops) {
		if c := &l.f.pollers[i].conn; c.fd >= 0 {
			syscall.Close(c.fd)
			c.fd = -1
		}
	}
}

// event handles what epoll reported of poller i's socket.
func (l *loop) event(i int, events uint32) {
	p := &l.f.pollers[i]
	c := &p.conn
	switch {
	case c.fd < 0: // closed earlier this round
	case c.connecting:
		if events&(syscall.EPOLLOUT|syscall.EPOLLERR|syscall.EPOLLHUP) == 0 {
			return
		}
		errno, err := syscall.GetsockoptInt(c.fd, syscall.SOL_SOCKET, syscall.SO_ERROR)
		if err == nil && errno != 0 {
			err = syscall.Errno(errno)
		}
		if err == nil {
			err = syscall.EpollCtl(l.ep, syscall.EPOLL_CTL_MOD, c.fd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(i)})
		}
		if err != nil {
			l.fail(i, fmt.Errorf("connect: %w", err))
			return
		}
		c.connecting = false
		l.ready = append(l.ready, i)
	default:
		l.read(i, p)
	}
}

// read reads once from poller i's socket and handles the answer if that
// completed it.
func (l *loop) read(i int, p *poller) {
	c := &p.conn
	dst := l.buf
	if c.in != nil {
		if len(c.in) == cap(c.in) {
			if cap(c.in) >= DefaultMaxResponse {
				l.fail(i, ErrTooLarge)
				return
			}
			c.grow(min(DefaultMaxResponse, max(2*cap(c.in), 512)))
		}
		dst = c.in[len(c.in):cap(c.in)]
	}
	n, oobn, _, _, err := syscall.Recvmsg(c.fd, dst, l.oob, 0)
	switch {
	case err == syscall.EAGAIN || err == syscall.EINTR:
		return // level-triggered: epoll reports it again
	case err != nil:
		l.fail(i, err)
		return
	case n == 0:
		l.fail(i, errEOF)
		return
	}
	at := l.arrived(oobn)
	data := dst[:n]
	if c.in != nil {
		c.in = c.in[:len(c.in)+n]
		data = c.in
	}
	resp, total, err := frame(data, DefaultMaxResponse)
	switch {
	case err != nil:
		l.fail(i, err)
		return
	case total == 0 || len(data) < total: // more to come
		if c.in == nil {
			c.in = append(make([]byte, 0, max(total, 2*n, l.f.cfg.BufSize)), data...)
		} else if total > cap(c.in) {
			c.grow(total)
		}
		return
	case len(data) > total:
		l.fail(i, errExtra)
		return
	}
	if err := l.f.answer(i, p, resp, at); err != nil {
		l.fail(i, err)
		return
	}
	if c.in != nil {
		c.in = c.in[:0] // kept: this poller's answers come in pieces
	}
	l.ready = append(l.ready, i)
}

// arrived reads when the bytes a read returned reached the socket: the
// kernel's receive time stamp (SO_TIMESTAMPNS) of the last of them, so that
// an answer is timed when the server's write delivered it, however long this
// loop took to come to it; the time now if there is no stamp.
func (l *loop) arrived(oobn int) int64 {
	if oobn >= syscall.CmsgSpace(int(unsafe.Sizeof(syscall.Timespec{}))) {
		h := (*syscall.Cmsghdr)(unsafe.Pointer(&l.oob[0]))
		if h.Level == syscall.SOL_SOCKET && h.Type == syscall.SCM_TIMESTAMPNS {
			return (*syscall.Timespec)(unsafe.Pointer(&l.oob[syscall.CmsgLen(0)])).Nano()
		}
	}
	return time.Now().UnixNano()
}

// grow makes c.in's capacity size, keeping what it holds.
func (c *conn) grow(size int) {
	b := make([]byte, len(c.in), size)
	copy(b, c.in)
	c.in = b
}

// send writes poller i's next poll.
func (l *loop) send(i int) {
	p := &l.f.pollers[i]
	c := &p.conn
	if c.fd < 0 {
		return
	}
	c.req = l.f.request(c.req, c.plen, p.version)
	for {
		n, err := syscall.Write(c.fd, c.req)
		if err == syscall.EINTR {
			continue
		}
		if err == nil && n < len(c.req) {
			err = errShortWrite
		}
		if err != nil {
			l.fail(i, err)
		}
		return
	}
}

// dial opens poller i's connection; its first poll goes once it connects.
func (l *loop) dial(i int) {
	f := l.f
	c := &f.pollers[i].conn
	if c.req == nil {
		target := f.cfg.Target(i)
		c.req = append(append(make([]byte, 0, len("GET ")+len(target)+20+len(f.suffix)), "GET "...), target...)
		c.plen = len(c.req)
	}
	fd, err := syscall.Socket(f.family, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		l.fail(i, fmt.Errorf("socket: %w", err))
		return
	}
	c.fd, c.connecting = fd, true
	_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1) // without it, reads are timed when they return
	if err := syscall.EpollCtl(l.ep, syscall.EPOLL_CTL_ADD, fd, &syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLOUT, Fd: int32(i)}); err != nil {
		l.fail(i, fmt.Errorf("epoll_ctl: %w", err))
		return
	}
	// Non-blocking: EINPROGRESS (or EINTR) means it goes on, and epoll
	// reports EPOLLOUT when it is done. There is no dial timeout of our
	// own: a connect the server never accepts fails when the kernel gives
	// up its SYN retries, and Start's timeout bounds the wait before that.
	if err := syscall.Connect(fd, l.sa); err != nil && err != syscall.EINPROGRESS && err != syscall.EINTR {
		l.fail(i, fmt.Errorf("connect: %w", err))
	}
}

// fail closes poller i's connection, counts the error and, unless the
// pollers are stopping, dials it again after retryAfter.
func (l *loop) fail(i int, err error) {
	c := &l.f.pollers[i].conn
	if c.fd >= 0 {
		syscall.Close(c.fd) // and out of the epoll set
	}
	c.fd, c.connecting, c.in = -1, false, nil // drop what a broken answer left
	if l.f.stopped.Load() {
		return
	}
	l.f.addError(err)
	l.retry = append(l.retry, retry{i: i, due: time.Now().Add(retryAfter).UnixNano()})
}

func (l *loop) dialAdded() {
	l.mu.Lock()
	added := l.added
	l.added = nil
	l.mu.Unlock()
	for _, i := range added {
		l.dial(i)
	}
}

func (l *loop) dialDue() {
	now := time.Now().UnixNano()
	k := 0
	for k < len(l.retry) && l.retry[k].due <= now {
		k++
	}
	due := l.retry[:k:k]
	l.retry = l.retry[k:]
	for _, r := range due {
		l.dial(r.i)
	}
}
