package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/authn"
	"github.com/sextant-mesh/sextant/internal/influxdev"
)

// adminToken is the operators' token of the suite's control plane.
const adminToken = "chaos-admin-token"

// plane is Sextant as separate processes: a three-member etcd cluster and
// one process of each service, on loopback free ports, with the proxies the
// faults go through.
type plane struct {
	binDir, dataDir string
	log             io.Writer

	members []etcdMember
	etcd    []*process
	// etcdLinks are the proxies between each service (by binary name) and
	// each etcd member: every service reaches etcd through its own.
	etcdLinks map[string][]*proxy
	// calcLink is the proxy mixers dial to reach the calculator (its
	// advertised address).
	calcLink *proxy
	// The data planes reach the control plane through these: mesh-core's
	// HTTP port (registration) and poll port (discovery), the mixer and
	// the config-center.
	dpCore, dpPoll, dpMixer, dpCenter *proxy

	meshCore, calculator, mixer, center *process
	// influx is the influxd every service writes its time series to; nil
	// when no influxd binary was found (influxErr says why).
	influx    *influxdev.Server
	influxErr error

	coreHTTP, coreKitex, corePoll string
	calcKitex, calcAdmin          string
	mixerHTTP, centerHTTP         string
}

func (p *plane) etcdEndpoints() string {
	var eps []string
	for _, m := range p.members {
		eps = append(eps, m.Client)
	}
	return strings.Join(eps, ",")
}

// service is a service's process, reaching etcd through proxies of its own.
func (p *plane) service(name string, args ...string) (*process, error) {
	var eps []string
	for _, m := range p.members {
		px, err := newProxy(m.Client)
		if err != nil {
			return nil, err
		}
		p.etcdLinks[name] = append(p.etcdLinks[name], px)
		eps = append(eps, px.Addr())
	}
	common := []string{"--etcd-endpoints", strings.Join(eps, ","), "--admin-token", adminToken}
	if p.influx != nil {
		args = append(args, "--influx-url", p.influx.URL())
	}
	return &process{name: name, bin: filepath.Join(p.binDir, name), args: append(common, args...), log: p.logFor(name)}, nil
}

// links are every proxy of the plane.
func (p *plane) links() []*proxy {
	out := []*proxy{p.calcLink, p.dpCore, p.dpPoll, p.dpMixer, p.dpCenter}
	for _, l := range p.etcdLinks {
		out = append(out, l...)
	}
	return out
}

// dpLinks are the data planes' links to the control plane.
func (p *plane) dpLinks() []*proxy { return []*proxy{p.dpCore, p.dpPoll, p.dpMixer, p.dpCenter} }

func (p *plane) logFor(name string) io.Writer {
	f, err := os.OpenFile(filepath.Join(p.dataDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return io.Discard
	}
	return f
}

// startPlane starts etcd and the four services and waits until each is ready.
func startPlane(ctx context.Context, binDir, dataDir string, policyTTL time.Duration) (*plane, error) {
	p := &plane{binDir: binDir, dataDir: dataDir, etcdLinks: map[string][]*proxy{}}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	for i := 1; i <= 3; i++ {
		p.members = append(p.members, etcdMember{Name: fmt.Sprintf("m%d", i), Client: freeAddr(), Peer: freeAddr()})
	}
	cluster := initialCluster(p.members)
	for _, m := range p.members {
		proc := &process{name: "etcd-" + m.Name, bin: self, log: p.logFor("etcd-" + m.Name),
			args: []string{"etcd-member", m.Name, filepath.Join(dataDir, m.Name), m.Client, m.Peer, cluster}}
		if err := proc.Start(); err != nil {
			return p, err
		}
		p.etcd = append(p.etcd, proc)
	}
	if err := p.waitEtcd(ctx, 60*time.Second); err != nil {
		return p, err
	}
	if err := p.republishWithin(ctx, policyTTL); err != nil {
		return p, err
	}
	wd, _ := os.Getwd()
	if bin, err := influxdev.Find(wd); err != nil {
		p.influxErr = err
	} else {
		dir := filepath.Join(dataDir, "influxd")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return p, err
		}
		if p.influx, err = influxdev.Start(bin, dir, freeAddr(), freeAddr()); err != nil {
			p.influx, p.influxErr = nil, err
		}
	}
	p.coreHTTP, p.coreKitex, p.corePoll = freeAddr(), freeAddr(), freeAddr()
	p.calcKitex, p.calcAdmin = freeAddr(), freeAddr()
	p.mixerHTTP, p.centerHTTP = freeAddr(), freeAddr()
	for _, l := range []struct {
		px     **proxy
		target string
	}{{&p.calcLink, p.calcKitex}, {&p.dpCore, p.coreHTTP}, {&p.dpPoll, p.corePoll}, {&p.dpMixer, p.mixerHTTP}, {&p.dpCenter, p.centerHTTP}} {
		if *l.px, err = newProxy(l.target); err != nil {
			return p, err
		}
	}
	if p.meshCore, err = p.service("mesh-core", "--http-addr", p.coreHTTP, "--kitex-addr", p.coreKitex, "--poll-addr", p.corePoll,
		"--policy-ttl", policyTTL.String(), "--etcd-probe-interval", "500ms"); err != nil {
		return p, err
	}
	if p.calculator, err = p.service("weight-calculator", "--id", "calc-1", "--kitex-addr", p.calcKitex, "--advertise-addr", p.calcLink.Addr(),
		"--admin-addr", p.calcAdmin, "--mesh-core-addr", p.coreKitex); err != nil {
		return p, err
	}
	if p.mixer, err = p.service("telemetry-mixer", "--id", "mixer-1", "--http-addr", p.mixerHTTP); err != nil {
		return p, err
	}
	if p.center, err = p.service("config-center", "--http-addr", p.centerHTTP); err != nil {
		return p, err
	}
	for _, s := range []*process{p.meshCore, p.calculator, p.mixer, p.center} {
		if err := s.Start(); err != nil {
			return p, err
		}
	}
	for _, s := range []*process{p.meshCore, p.calculator, p.mixer, p.center} {
		if err := p.waitReady(ctx, s, 60*time.Second); err != nil {
			return p, err
		}
	}
	return p, nil
}

// readyURL is where a service answers /readyz.
func (p *plane) readyURL(s *process) string {
	addr := map[*process]string{p.meshCore: p.coreHTTP, p.calculator: p.calcAdmin, p.mixer: p.mixerHTTP, p.center: p.centerHTTP}[s]
	return "http://" + addr + "/readyz"
}

func (p *plane) waitReady(ctx context.Context, s *process, timeout time.Duration) error {
	if err := waitHTTP(ctx, p.readyURL(s), timeout); err != nil {
		return fmt.Errorf("%s: %w", s.name, err)
	}
	return nil
}

// restart starts a killed service again and waits until it is ready.
func (p *plane) restart(ctx context.Context, s *process) error {
	if err := s.Start(); err != nil {
		return err
	}
	return p.waitReady(ctx, s, 60*time.Second)
}

// etcdClient is a client of the whole cluster.
func (p *plane) etcdClient() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: strings.Split(p.etcdEndpoints(), ","), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

// waitEtcd waits until the cluster accepts a write.
func (p *plane) waitEtcd(ctx context.Context, timeout time.Duration) error {
	cli, err := p.etcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	deadline := time.Now().Add(timeout)
	for {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := cli.Put(c, "/sextant-chaos/ping", time.Now().String())
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd cluster not writable after %s: %w", timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// token issues a data-plane token of service as the config-center does (its
// record in etcd).
func (p *plane) token(ctx context.Context, service string) (string, error) {
	cli, err := p.etcdClient()
	if err != nil {
		return "", err
	}
	defer cli.Close()
	record, token := authn.NewToken(authn.DataPlane(service, "chaos"), 24*time.Hour, time.Now())
	b, _ := json.Marshal(record)
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := cli.Put(c, api.Keys{Prefix: api.DefaultPrefix}.Token(record.ID), string(b)); err != nil {
		return "", fmt.Errorf("token of %s: %w", service, err)
	}
	return token, nil
}

// discovery is mesh-core's own answer for service, asked as an operator.
func (p *plane) discovery(ctx context.Context, service string) (*api.Discovery, error) {
	c, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(c, http.MethodGet, "http://"+p.coreHTTP+"/v1/discovery/"+service, nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("discovery of %s: status %d", service, resp.StatusCode)
	}
	var d api.Discovery
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		return nil, err
	}
	return &d, nil
}

// Close stops every process and proxy.
func (p *plane) Close() {
	for _, s := range []*process{p.mixer, p.calculator, p.center, p.meshCore} {
		if s != nil {
			s.Stop()
		}
	}
	for _, e := range p.etcd {
		e.Stop()
	}
	if p.influx != nil {
		p.influx.Stop()
	}
	for _, px := range p.links() {
		if px != nil {
			px.Close()
		}
	}
}

// compactAndDefrag compacts etcd to its current revision (physically) and
// defragments every member, then resets every service's connections to
// etcd so that their watches resume from a compacted revision.
func (p *plane) compactAndDefrag(ctx context.Context) error {
	cli, err := p.etcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	put, err := cli.Put(c, "/sextant-chaos/compact", time.Now().String())
	if err != nil {
		return err
	}
	if _, err := cli.Compact(c, put.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		return fmt.Errorf("compact to %d: %w", put.Header.Revision, err)
	}
	for _, m := range p.members {
		if _, err := cli.Defragment(c, m.Client); err != nil {
			return fmt.Errorf("defragment %s: %w", m.Name, err)
		}
	}
	fmt.Printf("  etcd-compact-defrag: compacted to revision %d, %d members defragmented\n", put.Header.Revision, len(p.members))
	for _, links := range p.etcdLinks {
		for _, px := range links {
			px.Reset()
		}
	}
	return nil
}

// relistLine is what internal/etcdx.Mirror logs when a watch finds its
// revision compacted.
const relistLine = "watch revision compacted; listing again"

// relists counts relistLine in each service's log.
func (p *plane) relists() map[string]int {
	out := map[string]int{}
	for name := range p.etcdLinks {
		b, _ := os.ReadFile(filepath.Join(p.dataDir, name+".log"))
		out[name] = strings.Count(string(b), relistLine)
	}
	return out
}

// metric is the value of an unlabelled metric on a service's /metrics.
func (p *plane) metric(ctx context.Context, addr, name string) (float64, error) {
	c, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(c, http.MethodGet, "http://"+addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			_, err := fmt.Sscan(v, &f)
			return f, err
		}
	}
	return 0, fmt.Errorf("no %s on %s/metrics", name, addr)
}

// calcTotals is what the calculator received of one instance: its own
// reports (server records) in windows, and the records of it, its own and
// its callers', that came too late for the windows kept.
type calcTotals struct{ records, late int64 }

// windows are the calculator's totals of backend's instances.
func (p *plane) windows(ctx context.Context) (map[string]calcTotals, error) {
	c, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(c, http.MethodGet, "http://"+p.calcAdmin+"/debug/windows?service="+backend, nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("the calculator's windows of %s: status %d", backend, resp.StatusCode)
	}
	var view struct {
		Instances []struct {
			Instance string `json:"instance"`
			Totals   struct {
				ServerRecords int64 `json:"server_records"`
				LateRecords   int64 `json:"late_records"`
			} `json:"totals"`
		} `json:"instances"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&view); err != nil {
		return nil, err
	}
	out := map[string]calcTotals{}
	for _, in := range view.Instances {
		out[in.Instance] = calcTotals{records: in.Totals.ServerRecords, late: in.Totals.LateRecords}
	}
	return out, nil
}

// republishWithin sets the calculator's republish_ms knob of backend to a
// third of mesh-core's policy TTL. With its default (30 s) over the
// suite's TTL (15 s), a calm spell in which the weights did not change
// enough to be published let the policy expire, as the TTL means it to
// when nothing refreshes it; a real deployment keeps the TTL (2 min) above
// republish_ms.
func (p *plane) republishWithin(ctx context.Context, policyTTL time.Duration) error {
	cli, err := p.etcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	knobs := fmt.Sprintf(`{"republish_ms": %d}`, max(1000, policyTTL.Milliseconds()/3))
	_, err = cli.Put(c, api.Keys{Prefix: api.DefaultPrefix}.Config(backend, api.KindCalculator, ""), knobs)
	return err
}
