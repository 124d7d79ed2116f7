package main

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The etcd counters read from its own Prometheus metrics (<client URL>/metrics).
var etcdCounters = []struct{ name, label string }{
	{"etcd_server_proposals_committed_total", "raft proposals committed (writes)"},
	{"etcd_mvcc_put_total", "mvcc puts"},
	{"etcd_mvcc_delete_total", "mvcc deletes"},
	{"etcd_mvcc_txn_total", "mvcc txns"},
	{"etcd_mvcc_range_total", "mvcc ranges (reads)"},
	{"etcd_debugging_lease_granted_total", "leases granted"},
	{"etcd_debugging_lease_renewed_total", "leases renewed"},
	{"etcd_debugging_lease_revoked_total", "leases revoked"},
	{"etcd_disk_wal_fsync_duration_seconds_count", "WAL fsyncs"},
}

// counters are metric values by name, summed over their label sets.
type counters map[string]float64

var metricsClient = &http.Client{Timeout: 10 * time.Second}

// scrape reads the metrics at url (Prometheus text format).
func scrape(url string) (counters, error) {
	resp, err := metricsClient.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	m := counters{}
	s := bufio.NewScanner(resp.Body)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		line := s.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		name := line[:i]
		if j := strings.IndexByte(name, '{'); j >= 0 {
			name = name[:j]
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[strings.TrimSpace(name)] += v
	}
	return m, s.Err()
}

// sub is m - o, name by name.
func (m counters) sub(o counters) counters {
	d := counters{}
	for k, v := range m {
		d[k] = v - o[k]
	}
	return d
}
