package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sextant-mesh/sextant/sdk"
)

// The data planes: backend is served by three instances (one of them slow,
// so that the calculator's weights are far from the static ones); front
// calls it through the SDK's Discovery and Picker. Every process of both
// registers and heartbeats (Registrar), reports telemetry (Reporter) and
// watches its config (ConfigWatcher).
const (
	backend = "chaos-backend"
	front   = "chaos-front"
)

type server struct {
	ln       net.Listener
	srv      *http.Server
	reg      *sdk.Registrar
	rep      *sdk.Reporter
	cfg      *sdk.ConfigWatcher
	delay    time.Duration
	inflight atomic.Int64
}

// load is the steady load of data planes.
type load struct {
	p        *plane
	servers  []*server
	slow     string // the backend instance six times slower than the others
	disc     *sdk.Discovery
	rep      *sdk.Reporter
	cfg      *sdk.ConfigWatcher
	reg      *sdk.Registrar
	picker   sdk.Picker
	pickerMu sync.Mutex
	client   *http.Client

	calls, failed atomic.Int64
	lastErr       atomic.Value
	cancel        context.CancelFunc
	wg            sync.WaitGroup
}

func startLoad(ctx context.Context, p *plane, rate int) (*load, error) {
	backTok, err := p.token(ctx, backend)
	if err != nil {
		return nil, err
	}
	frontTok, err := p.token(ctx, front)
	if err != nil {
		return nil, err
	}
	l := &load{p: p, client: &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}}
	var static []sdk.Instance
	for _, delay := range []time.Duration{2 * time.Millisecond, 2 * time.Millisecond, 12 * time.Millisecond} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		s := &server{ln: ln, delay: delay}
		addr := ln.Addr().String()
		s.rep = sdk.NewReporter(sdk.ReporterOptions{Mixer: p.mixerHTTP, Token: backTok, Service: backend, Instance: addr,
			Utilization: func(time.Duration) float64 { return 0.1 + float64(s.inflight.Load())/4 }})
		s.rep.Start()
		s.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			n := s.inflight.Add(1)
			time.Sleep(s.delay)
			s.inflight.Add(-1)
			s.rep.RecordServed(sdk.Priority{Business: 64}, 0, time.Since(start), n)
			io.WriteString(w, "ok")
		})}
		go s.srv.Serve(ln)
		s.reg = sdk.StartRegistrar(sdk.RegistrarOptions{MeshCore: p.coreHTTP, Token: backTok,
			Registration: sdk.Registration{Service: backend, Instance: addr, Addr: addr, TTLSeconds: 10}})
		s.cfg = sdk.NewConfigWatcher(sdk.ConfigWatcherOptions{ConfigCenter: p.centerHTTP, Service: backend, Instance: addr, Token: backTok, Wait: 5 * time.Second})
		s.cfg.Start()
		l.servers = append(l.servers, s)
		static = append(static, sdk.Instance{Instance: addr, Addr: addr, Weight: 100, StaticWeight: 100, Healthy: true})
	}
	l.slow = l.servers[len(l.servers)-1].ln.Addr().String()
	frontAddr := freeAddr()
	l.reg = sdk.StartRegistrar(sdk.RegistrarOptions{MeshCore: p.coreHTTP, Token: frontTok,
		Registration: sdk.Registration{Service: front, Instance: frontAddr, Addr: frontAddr, TTLSeconds: 10}})
	l.rep = sdk.NewReporter(sdk.ReporterOptions{Mixer: p.mixerHTTP, Token: frontTok, Service: front, Instance: frontAddr})
	l.rep.Start()
	l.cfg = sdk.NewConfigWatcher(sdk.ConfigWatcherOptions{ConfigCenter: p.centerHTTP, Service: front, Instance: frontAddr, Token: frontTok,
		Calls: []string{backend}, Wait: 5 * time.Second})
	l.cfg.Start()
	l.disc = sdk.NewDiscovery(sdk.DiscoveryOptions{MeshCore: p.corePoll, Token: frontTok, Wait: 5 * time.Second})
	l.disc.Watch(backend, static, func(s *sdk.Snapshot) {
		l.pickerMu.Lock()
		l.picker.Update(s)
		l.pickerMu.Unlock()
	})
	if s, ok := l.disc.Get(backend); ok {
		l.picker.Update(s)
	}
	cctx, cancel := context.WithCancel(ctx)
	l.cancel = cancel
	const workers = 4
	for w := 0; w < workers; w++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			tick := time.NewTicker(time.Second * workers / time.Duration(rate))
			defer tick.Stop()
			for {
				select {
				case <-cctx.Done():
					return
				case <-tick.C:
				}
				l.call(cctx)
			}
		}()
	}
	return l, nil
}

// call makes one call of front to backend, on the instance the SDK picks.
func (l *load) call(ctx context.Context) {
	l.pickerMu.Lock()
	in, err := l.picker.Pick()
	l.pickerMu.Unlock()
	l.calls.Add(1)
	start := time.Now()
	if err == nil {
		var req *http.Request
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, "http://"+in.Addr+"/", nil)
		if err == nil {
			var resp *http.Response
			resp, err = l.client.Do(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
		}
	}
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		l.failed.Add(1)
		l.lastErr.Store(err.Error())
	}
	l.rep.RecordCall(backend, in.Instance, time.Since(start), err != nil, false)
}

// reporters are every Reporter of the load.
func (l *load) reporters() []*sdk.Reporter {
	r := []*sdk.Reporter{l.rep}
	for _, s := range l.servers {
		r = append(r, s.rep)
	}
	return r
}

// uncounted is, over every reporter, the windows neither sent, pending nor
// counted as dropped (one in flight may be in none yet).
func (l *load) uncounted() (uncounted int64, dropped map[string]int64) {
	dropped = map[string]int64{}
	for _, r := range l.reporters() {
		st := r.Stats()
		var d int64
		for reason, n := range st.DroppedWindows {
			d += n
			dropped[reason] += n
		}
		if u := st.Windows - st.Sent - int64(st.Pending) - d; u > 1 {
			uncounted += u
		}
	}
	return uncounted, dropped
}

func (l *load) Close() {
	l.cancel()
	l.wg.Wait()
	l.disc.Close()
	l.cfg.Close()
	l.reg.Close()
	l.rep.Close()
	for _, s := range l.servers {
		s.reg.Close()
		s.cfg.Close()
		s.rep.Close()
		s.srv.Close()
	}
}
