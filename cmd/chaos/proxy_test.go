package main

import (
	"bufio"
	"net"
	"testing"
	"time"
)

// echo serves lines back on a loopback port until the test ends.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				s := bufio.NewScanner(c)
				for s.Scan() {
					if _, err := c.Write(append(s.Bytes(), '\n')); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(addr string) (time.Duration, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return 0, err
	}
	if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func TestProxyCutsDelaysAndHeals(t *testing.T) {
	p, err := newProxy(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := roundTrip(p.Addr()); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}

	p.Cut(true)
	if _, err := roundTrip(p.Addr()); err == nil {
		t.Fatal("a round trip passed a cut link")
	}
	p.Cut(false)
	if _, err := roundTrip(p.Addr()); err != nil {
		t.Fatalf("after the cut healed: %v", err)
	}

	p.Delay(100 * time.Millisecond)
	d, err := roundTrip(p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if d < 200*time.Millisecond { // 100 ms each way
		t.Fatalf("round trip %s with 100 ms added each way", d)
	}
}

func TestProxyCutClosesOpenConnections(t *testing.T) {
	p, err := newProxy(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if _, err := c.Write([]byte("a\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	p.Cut(true)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = c.Write([]byte("b\n"))
	if line, err := r.ReadString('\n'); err == nil {
		t.Fatalf("read %q through a cut link", line)
	}
}

// A lossy link holds some chunks for a retransmission timeout, in order,
// and resets some connections; Reset drops the open connections and the
// link goes on accepting new ones.
func TestProxyLossAndReset(t *testing.T) {
	p, err := newProxy(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.Loss(lossModel{Hold: 1, RTOMin: 200 * time.Millisecond, RTOMax: 400 * time.Millisecond})
	d, err := roundTrip(p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if d < 400*time.Millisecond || d > 2*time.Second { // a hold each way
		t.Fatalf("round trip %s with every chunk held 200 to 400 ms each way", d)
	}
	p.Loss(lossModel{Reset: 1})
	if _, err := roundTrip(p.Addr()); err == nil {
		t.Fatal("a round trip passed a link that resets every connection")
	}
	p.Loss(lossModel{})
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("a\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	p.Reset()
	_, _ = c.Write([]byte("b\n"))
	if line, err := r.ReadString('\n'); err == nil {
		t.Fatalf("read %q through a connection the proxy reset", line)
	}
	if _, err := roundTrip(p.Addr()); err != nil {
		t.Fatalf("a new connection after the reset: %v", err)
	}
}
