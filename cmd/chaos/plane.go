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
	// coreEtcd are the proxies between mesh-core and each etcd member.
	coreEtcd []*proxy
	// calcLink is the proxy mixers dial to reach the calculator (its
	// advertised address).
	calcLink *proxy

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

func (p *plane) service(name string, args ...string) *process {
	common := []string{"--etcd-endpoints", p.etcdEndpoints(), "--admin-token", adminToken}
	if p.influx != nil {
		args = append(args, "--influx-url", p.influx.URL())
	}
	return &process{name: name, bin: filepath.Join(p.binDir, name), args: append(common, args...), log: p.logFor(name)}
}

func (p *plane) logFor(name string) io.Writer {
	f, err := os.OpenFile(filepath.Join(p.dataDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return io.Discard
	}
	return f
}

// startPlane starts etcd and the four services and waits until each is ready.
func startPlane(ctx context.Context, binDir, dataDir string, policyTTL time.Duration) (*plane, error) {
	p := &plane{binDir: binDir, dataDir: dataDir}
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
	var coreEps []string
	for _, m := range p.members {
		px, err := newProxy(m.Client)
		if err != nil {
			return p, err
		}
		p.coreEtcd = append(p.coreEtcd, px)
		coreEps = append(coreEps, px.Addr())
	}
	p.coreHTTP, p.coreKitex, p.corePoll = freeAddr(), freeAddr(), freeAddr()
	p.calcKitex, p.calcAdmin = freeAddr(), freeAddr()
	p.mixerHTTP, p.centerHTTP = freeAddr(), freeAddr()
	if p.calcLink, err = newProxy(p.calcKitex); err != nil {
		return p, err
	}
	p.meshCore = p.service("mesh-core", "--http-addr", p.coreHTTP, "--kitex-addr", p.coreKitex, "--poll-addr", p.corePoll,
		"--policy-ttl", policyTTL.String(), "--etcd-probe-interval", "500ms")
	// mesh-core reaches etcd through the proxies only.
	p.meshCore.args[1] = strings.Join(coreEps, ",")
	p.calculator = p.service("weight-calculator", "--id", "calc-1", "--kitex-addr", p.calcKitex, "--advertise-addr", p.calcLink.Addr(),
		"--admin-addr", p.calcAdmin, "--mesh-core-addr", p.coreKitex)
	p.mixer = p.service("telemetry-mixer", "--id", "mixer-1", "--http-addr", p.mixerHTTP)
	p.center = p.service("config-center", "--http-addr", p.centerHTTP)
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
	for _, px := range append(p.coreEtcd, p.calcLink) {
		if px != nil {
			px.Close()
		}
	}
}
