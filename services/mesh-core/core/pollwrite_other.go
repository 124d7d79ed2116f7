//go:build !unix

package core

import "errors"

var errWouldBlock = errors.New("write through netpoll")

// writeNow leaves every write to netpoll where sockets are not file descriptors.
func writeNow(int, []byte) (int, error) { return 0, errWouldBlock }
