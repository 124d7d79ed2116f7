package main

import (
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// proxy is a TCP proxy on loopback that the suite puts on a link, to cut it
// (a partition: open connections are closed and new ones refused), to
// delay it (each chunk read is held before it is passed on), to make it
// lossy (Loss), or to drop its open connections once (Reset).
type proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	delay time.Duration
	loss  lossModel
	conns map[net.Conn]struct{}

	// held and resets count what Loss did: chunks held, connections reset.
	held, resets atomic.Int64
}

// lossModel is how a proxy emulates packet loss on a TCP link, which the
// suite cannot drop packets of as an unprivileged user: what a loss does
// to the endpoints of a TCP connection is a stall and, rarely, a broken
// connection, and that is what it makes.
//
//   - Each chunk read from either side (up to 32 KiB, what one read
//     returned) is, with probability Hold, held for a retransmission
//     timeout drawn uniformly from [RTOMin, RTOMax] before it is passed on.
//     Everything behind it on that direction waits too (TCP delivers in
//     order), as a lost segment and its retransmission would do.
//   - With probability Reset per chunk, the connection is reset instead:
//     both sides are closed with SO_LINGER 0 (an RST), as when the
//     retransmissions give up or a middlebox drops the flow.
type lossModel struct {
	Hold, Reset    float64
	RTOMin, RTOMax time.Duration
}

func newProxy(target string) (*proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go p.accept()
	return p, nil
}

// Addr is where the proxy listens.
func (p *proxy) Addr() string { return p.ln.Addr().String() }

// Cut partitions the link (true) or heals it (false).
func (p *proxy) Cut(cut bool) {
	p.mu.Lock()
	p.cut = cut
	var open []net.Conn
	if cut {
		for c := range p.conns {
			open = append(open, c)
		}
	}
	p.mu.Unlock()
	for _, c := range open {
		c.Close()
	}
}

// Delay adds d to every chunk passed in either direction.
func (p *proxy) Delay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// Loss makes the link lossy (the zero lossModel heals it).
func (p *proxy) Loss(m lossModel) {
	p.mu.Lock()
	p.loss = m
	p.mu.Unlock()
}

// Reset closes every open connection with an RST and goes on accepting
// new ones: the endpoints must reconnect (and their watches resume).
func (p *proxy) Reset() {
	p.mu.Lock()
	var open []net.Conn
	for c := range p.conns {
		open = append(open, c)
	}
	p.mu.Unlock()
	for _, c := range open {
		abort(c)
	}
}

// abort closes c with an RST.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
}

// Close stops listening and closes every open connection.
func (p *proxy) Close() {
	p.ln.Close()
	p.Cut(true)
}

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		cut := p.cut
		p.mu.Unlock()
		if cut {
			c.Close()
			continue
		}
		go p.serve(c)
	}
}

func (p *proxy) track(c net.Conn, add bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
}

func (p *proxy) serve(in net.Conn) {
	out, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		in.Close()
		return
	}
	p.track(in, true)
	p.track(out, true)
	defer func() {
		in.Close()
		out.Close()
		p.track(in, false)
		p.track(out, false)
	}()
	var wg sync.WaitGroup
	wg.Add(2)
	reset := func() { abort(in); abort(out) }
	go func() { defer wg.Done(); p.pipe(out, in, reset); out.Close() }()
	go func() { defer wg.Done(); p.pipe(in, out, reset); in.Close() }()
	wg.Wait()
}

func (p *proxy) pipe(dst io.Writer, src io.Reader, reset func()) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			d, loss := p.delay, p.loss
			p.mu.Unlock()
			if loss.Reset > 0 && rand.Float64() < loss.Reset {
				p.resets.Add(1)
				reset()
				return
			}
			if loss.Hold > 0 && rand.Float64() < loss.Hold {
				p.held.Add(1)
				d += loss.RTOMin + time.Duration(rand.Int64N(int64(loss.RTOMax-loss.RTOMin)+1))
			}
			if d > 0 {
				time.Sleep(d)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
