// Package etcdx holds what every Sextant service needs from etcd: a client,
// a health probe, and Mirror, an in-memory copy of one key prefix that follows
// etcd's watch and survives etcd being away. It is client code only: the
// embedded server of `sextant dev` and the tests is internal/etcdembed.
package etcdx

import (
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// NewClient connects to a comma-separated list of endpoints. It does not wait
// for etcd: a service starts, and degrades, while etcd is away.
func NewClient(endpoints string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:            SplitEndpoints(endpoints),
		DialTimeout:          3 * time.Second,
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		// etcd's client logs every reconnect attempt at warn level; the
		// services report etcd's state on /readyz and in their own logs.
		Logger: zap.NewNop(),
	})
}

// SplitEndpoints turns "a:1, b:2" into ["a:1", "b:2"].
func SplitEndpoints(s string) []string {
	var out []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}
