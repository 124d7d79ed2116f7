package main

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sextant-mesh/sextant/internal/freeport"

	"github.com/sextant-mesh/sextant/internal/etcdembed"
	"github.com/sextant-mesh/sextant/internal/influxdev"
	"github.com/sextant-mesh/sextant/internal/logx"
	"github.com/sextant-mesh/sextant/internal/tsdb"
	"github.com/sextant-mesh/sextant/loadtest/internal/proc"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixer"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculator"
)

// The whole path is what `sextant dev` runs for ingest: a telemetry-mixer
// (Hertz, decoding, validation, the forwarder) and a weight-calculator shard
// it forwards to over Kitex, each in a process of its own, over an etcd in a
// third process; with -influx, a real influxd in a fourth, written to by
// both services. Every process is this binary re-executed, except influxd.

// procInfo is one process of a deployment and what the tool reads of it.
type procInfo struct {
	name    string
	pid     int
	sextant bool   // counted in "reports per CPU-s"
	metrics string // its /metrics URL, if it has one
}

// deployment is what one column of the comparison loads: where to post, and
// the processes whose cost is measured.
type deployment struct {
	url   string
	procs []procInfo
	// mixerMetrics and calcMetrics are set for the whole path only.
	mixerMetrics, calcMetrics string
	stop                      func()
}

// pathOptions is what a child of the whole path is told on its command line.
type pathOptions struct {
	etcd, influx string
	caKey        string // with it, the Kitex hop is mTLS (the HTTP edge stays plain)
	edgeTLS      bool   // with caKey: the mixer's HTTP edge is served over TLS too
}

// startPath starts etcd, a calculator and a mixer (and influxd when influx
// is set), each in its own process, and waits until the mixer routes to the
// calculator.
func startPath(o options, influx bool) (*deployment, error) {
	d := &deployment{}
	var stops []func()
	d.stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	fail := func(err error) (*deployment, error) {
		d.stop()
		return nil, err
	}
	etcdAddr, err := freeport.Addr()
	if err != nil {
		return nil, err
	}
	etcd, err := proc.Spawn([]string{"-serve=etcd", "-addr=" + etcdAddr}, 1, 30*time.Second)
	if err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	stops = append(stops, etcd.Stop)
	d.procs = append(d.procs, procInfo{name: "etcd", pid: etcd.Pid()})
	args := []string{"-etcd=" + etcdAddr}
	if o.mtls {
		keyFile, remove, err := tempCAKey()
		if err != nil {
			return fail(err)
		}
		stops = append(stops, remove)
		args = append(args, "-ca-key-file="+keyFile)
		if o.edgeTLS {
			args = append(args, "-edge-tls")
		}
	}
	if influx {
		bin, err := influxdev.Find(".")
		if err != nil {
			return fail(fmt.Errorf("%w (make bin/influxd)", err))
		}
		dir, err := os.MkdirTemp("", "ingest-influxd-")
		if err != nil {
			return fail(err)
		}
		httpAddr, err1 := freeport.Addr()
		rpcAddr, err2 := freeport.Addr()
		if err := errors.Join(err1, err2); err != nil {
			return fail(err)
		}
		srv, err := influxdev.Start(bin, dir, httpAddr, rpcAddr)
		if err != nil {
			os.RemoveAll(dir)
			return fail(err)
		}
		stops = append(stops, func() { srv.Stop(); os.RemoveAll(dir) })
		d.procs = append(d.procs, procInfo{name: "influxd", pid: srv.Pid()})
		args = append(args, "-influx-url="+srv.URL())
	}
	calc, err := proc.Spawn(append([]string{"-serve=calculator"}, args...), o.procs, 30*time.Second)
	if err != nil {
		return fail(fmt.Errorf("calculator: %w", err))
	}
	stops = append(stops, calc.Stop)
	calcAdmin, _ := strings.CutPrefix(calc.FirstLine, "listening ")
	d.calcMetrics = "http://" + calcAdmin + "/metrics"
	d.procs = append(d.procs, procInfo{name: "calculator", pid: calc.Pid(), sextant: true, metrics: d.calcMetrics})
	mx, err := proc.Spawn(append([]string{"-serve=mixer"}, args...), o.procs, 30*time.Second)
	if err != nil {
		return fail(fmt.Errorf("mixer: %w", err))
	}
	stops = append(stops, mx.Stop)
	mixerAddr, _ := strings.CutPrefix(mx.FirstLine, "listening ")
	scheme := "http://"
	if o.edgeTLS {
		scheme = "https://"
	}
	d.url = scheme + mixerAddr + "/v1/telemetry"
	d.mixerMetrics = scheme + mixerAddr + "/metrics"
	d.procs = append(d.procs, procInfo{name: "mixer", pid: mx.Pid(), sextant: true, metrics: d.mixerMetrics})
	deadline := time.Now().Add(30 * time.Second)
	for {
		m, err := scrape(d.mixerMetrics)
		if err == nil && m["sextant_mixer_shards"] >= 1 {
			return d, nil
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("the mixer routes to no calculator after 30 s (%v)", err))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// servePath is a child of the whole path: etcd, calculator or mixer.
func servePath(kind, addr string, po pathOptions, stop <-chan os.Signal) error {
	switch kind {
	case "etcd":
		dir, err := os.MkdirTemp("", "ingest-etcd-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		peer, err := freeport.Addr()
		if err != nil {
			return err
		}
		e, err := etcdembed.Start(filepath.Join(dir, "data"), addr, peer)
		if err != nil {
			return err
		}
		defer e.Close()
		fmt.Println("listening", addr)
		<-stop
		return nil
	case "calculator":
		cfg := calculator.DefaultConfig()
		cfg.ID = "calc-1"
		cfg.Auth.AdminToken = os.Getenv(tokenEnv)
		cfg.KitexAddr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
		cfg.Etcd.Endpoints = po.etcd
		cfg.MeshCoreAddr = "127.0.0.1:1" // no mesh-core: publishing fails, counted, and costs what it costs
		cfg.TSDB = seriesConfig(po.influx)
		cfg.TLS.CAKeyFile, cfg.TLS.PlainHTTP = po.caKey, true
		c, err := calculator.New(cfg, logx.Discard())
		if err != nil {
			return err
		}
		if err := c.Start(); err != nil {
			return err
		}
		fmt.Println("listening", c.AdminAddr())
		<-stop
		return c.Stop(stopContext())
	case "mixer":
		cfg := mixer.DefaultConfig()
		cfg.ID = "mixer-1"
		cfg.Auth.AdminToken = os.Getenv(tokenEnv)
		cfg.HTTPAddr = "127.0.0.1:0"
		cfg.Etcd.Endpoints = po.etcd
		cfg.MaxBodyBytes = maxBody
		cfg.TSDB = seriesConfig(po.influx)
		cfg.TLS.CAKeyFile, cfg.TLS.PlainHTTP = po.caKey, !po.edgeTLS
		m, err := mixer.New(cfg, logx.Discard())
		if err != nil {
			return err
		}
		if err := m.Start(); err != nil {
			return err
		}
		fmt.Println("listening", m.Addr())
		<-stop
		return m.Stop(stopContext())
	}
	return fmt.Errorf("unknown server %q", kind)
}

// tempCAKey writes a CA key file for a deployment over mTLS: the
// calculator creates the authority in etcd with it, and both services
// issue themselves their certificates.
func tempCAKey() (path string, remove func(), err error) {
	dir, err := os.MkdirTemp("", "ingest-ca-")
	if err != nil {
		return "", nil, err
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	path = filepath.Join(dir, "ca.key")
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(key)), 0o600); err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	return path, func() { os.RemoveAll(dir) }, nil
}

// seriesConfig is the services' time-series setting: the defaults `sextant
// dev` runs with, towards url (off when empty).
func seriesConfig(url string) tsdb.Config {
	c := tsdb.DefaultConfig()
	c.URL = url
	return c
}

// scrape reads a Prometheus text page and sums every sample by metric name
// (labels dropped).
func scrape(url string) (map[string]float64, error) {
	resp, err := tlsClient.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	s := bufio.NewScanner(resp.Body)
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		line := s.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if i := strings.IndexByte(name, '{'); i >= 0 {
			// labels may hold spaces: the value follows the closing brace
			j := strings.LastIndexByte(line, '}')
			name, rest = line[:i], strings.TrimSpace(line[j+1:])
		}
		if f := strings.Fields(rest); len(f) > 0 {
			if v, err := strconv.ParseFloat(f[0], 64); err == nil {
				out[name] += v
			}
		}
	}
	return out, s.Err()
}

// scrapeLabelled sums the samples of one metric whose labels contain match.
func scrapeLabelled(url, name, match string) (float64, error) {
	resp, err := tlsClient.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	s := bufio.NewScanner(resp.Body)
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		line := s.Text()
		if !strings.HasPrefix(line, name+"{") || !strings.Contains(line, match) {
			continue
		}
		f := strings.Fields(line[strings.LastIndexByte(line, '}')+1:])
		if len(f) > 0 {
			v, _ := strconv.ParseFloat(f[0], 64)
			sum += v
		}
	}
	return sum, s.Err()
}
