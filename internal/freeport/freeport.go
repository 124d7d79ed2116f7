// Package freeport picks loopback addresses for servers that must be told
// their address rather than handed a listener (etcd, influxd, child
// processes started with flags).
package freeport

import (
	"net"
	"sync"
)

var (
	mu    sync.Mutex
	given = map[int]bool{}
)

// Addr returns a 127.0.0.1 host:port that was free a moment ago and that
// this process has not handed out before. The kernel may give a port just
// closed to the next bind of port 0, so without the record two servers
// started one after the other could be told the same port.
func Addr() (string, error) {
	mu.Lock()
	defer mu.Unlock()
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		a := ln.Addr().(*net.TCPAddr)
		ln.Close()
		if !given[a.Port] {
			given[a.Port] = true
			return a.String(), nil
		}
	}
}
