//go:build !linux || portablepoll

package core

import (
	"maps"
	"net"
	"slices"
	"sync"
	"time"
)

// sockets keeps the poll port's connections where there is no epoll
// (development machines): a goroutine reads each connection, so a parked
// poll costs that goroutine here. Deployments run on Linux, where
// pollsock_linux.go parks polls without one.
type sockets struct {
	s     *PollServer
	mu    sync.Mutex
	conns map[*pconn]bool
	reads sync.WaitGroup
}

// parksWithoutGoroutine: each connection holds its reading goroutine here.
const parksWithoutGoroutine = false

func newSockets(s *PollServer) (*sockets, error) {
	return &sockets{s: s, conns: map[*pconn]bool{}}, nil
}

func (k *sockets) add(c net.Conn) error {
	cs := &connSock{k: k, c: c}
	pc := k.s.open(cs)
	cs.pc = pc
	k.mu.Lock()
	k.conns[pc] = true
	k.mu.Unlock()
	k.reads.Go(func() {
		buf := make([]byte, 1<<10)
		for {
			n, err := c.Read(buf)
			pc.mu.Lock()
			if pc.shut {
				pc.mu.Unlock()
				return
			}
			if n > 0 {
				pc.received(buf[:n])
			}
			if err != nil {
				pc.closing = true
			}
			pc.unlock()
			if err != nil {
				return
			}
		}
	})
	return nil
}

func (k *sockets) run()  {}
func (k *sockets) stop() {}

func (k *sockets) closeAll() {
	k.mu.Lock()
	pcs := slices.Collect(maps.Keys(k.conns))
	k.mu.Unlock()
	closeEach(pcs)
	k.reads.Wait()
}

// connSock writes through the connection, on a goroutine of its own.
type connSock struct {
	k  *sockets
	c  net.Conn
	pc *pconn
}

func (f *connSock) write([]byte) (int, error) { return 0, errWouldBlock }

func (f *connSock) flush(pc *pconn, b []byte) {
	go func() {
		_ = f.c.SetWriteDeadline(time.Now().Add(f.k.s.o.WriteTimeout))
		_, err := f.c.Write(b)
		pc.mu.Lock()
		defer pc.unlock()
		pc.flushed(err)
	}()
}

func (f *connSock) close() {
	f.k.mu.Lock()
	delete(f.k.conns, f.pc)
	f.k.mu.Unlock()
	_ = f.c.Close()
}
