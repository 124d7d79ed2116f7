// Package etcdx holds what every Sextant service needs from etcd: a client,
// an embedded server for `sextant dev` and tests, and Mirror, an in-memory copy
// of one key prefix that follows etcd's watch and survives etcd being away.
package etcdx

import (
	"fmt"
	"net/url"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// Embedded is an etcd server running inside this process.
type Embedded struct {
	etcd      *embed.Etcd
	ClientURL string
}

// StartEmbedded starts a single-member etcd with its data in dir, serving
// clients on clientAddr and peers on peerAddr (host:port each), and waits until
// it is ready.
func StartEmbedded(dir, clientAddr, peerAddr string) (*Embedded, error) {
	cfg := embed.NewConfig()
	cfg.Name = "sextant-dev"
	cfg.Dir = dir
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{"stderr"}
	clientURL := url.URL{Scheme: "http", Host: clientAddr}
	peerURL := url.URL{Scheme: "http", Host: peerAddr}
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.Name + "=" + peerURL.String()
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd on %s: %w", clientAddr, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		return nil, fmt.Errorf("embedded etcd on %s not ready after 30s", clientAddr)
	}
	return &Embedded{etcd: e, ClientURL: clientURL.String()}, nil
}

// Close stops the server.
func (e *Embedded) Close() { e.etcd.Close() }
