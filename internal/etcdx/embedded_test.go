package etcdx

import "github.com/sextant-mesh/sextant/internal/etcdembed"

// StartEmbedded starts the embedded etcd this package's tests run against
// (internal/etcdembed; the package itself links no etcd server).
func StartEmbedded(dir, clientAddr, peerAddr string) (*etcdembed.Server, error) {
	return etcdembed.Start(dir, clientAddr, peerAddr)
}
