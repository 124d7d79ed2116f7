//go:build !linux

package longpoll

import (
	"net"
	"sync/atomic"
	"time"
)

// Outside Linux each poller is a goroutine that writes its poll, then
// blocks in Read on its connection: the runtime's netpoller parks it at the
// cost of its stack and a wake-up per answer.

// driver is nothing here: the pollers are goroutines of their own.
type driver struct{}

// conn is a poller's connection, for Stop to close.
type conn struct{ c atomic.Pointer[net.TCPConn] }

func (f *Fanout) startDriver() error { return nil }

func (f *Fanout) launch(i int) { f.wg.Go(func() { f.run(i) }) }

// Stop ends every poll and waits for the pollers. Safe to call twice.
func (f *Fanout) Stop() {
	f.stopped.Store(true)
	for i := range f.pollers {
		if c := f.pollers[i].conn.c.Load(); c != nil {
			c.Close()
		}
	}
	f.wg.Wait()
}

var dialer = net.Dialer{Timeout: 10 * time.Second, KeepAlive: -1} // no TCP keep-alive probes: the polls themselves are

// run is poller i: connect, poll until an error, again until stopped.
func (f *Fanout) run(i int) {
	p := &f.pollers[i]
	rd := NewReader(f.cfg.BufSize, DefaultMaxResponse)
	target := f.cfg.Target(i)
	req := make([]byte, 0, len("GET ")+len(target)+20+len(f.suffix))
	req = append(append(req, "GET "...), target...)
	for !f.stopped.Load() {
		c, err := dialer.Dial("tcp", f.cfg.Addr)
		if err == nil {
			tc := c.(*net.TCPConn)
			p.conn.c.Store(tc)
			if f.stopped.Load() { // Stop may have looked before the Store
				tc.Close()
				return
			}
			err = f.poll(i, p, tc, rd, req)
			tc.Close()
		}
		if f.stopped.Load() {
			return
		}
		f.addError(err)
		time.Sleep(retryAfter)
		*rd = *NewReader(f.cfg.BufSize, DefaultMaxResponse) // drop what a broken answer left
	}
}

// poll runs poller i's long polls on c until one fails; req holds "GET
// <target>", to which each poll appends its version and the rest.
func (f *Fanout) poll(i int, p *poller, c *net.TCPConn, rd *Reader, req []byte) error {
	plen := len(req)
	for {
		req = f.request(req, plen, p.version)
		if _, err := c.Write(req); err != nil {
			return err
		}
		resp, err := rd.Read(c)
		if err != nil {
			return err
		}
		if err := f.answer(i, p, resp, time.Now().UnixNano()); err != nil {
			return err
		}
	}
}
