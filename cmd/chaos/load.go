package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
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
	dpLog    *slog.Logger

	frontTok string
	// skewed are the callers started with a clock that is off (clock-skew).
	skewedMu   sync.Mutex
	skewed     []*sdk.Reporter
	stopSkewed func()

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
	// The SDK's own logs (a window refused, a watch failing) go to the
	// data folder.
	dpLog := slog.New(slog.NewTextHandler(p.logFor("data-planes"), nil))
	l := &load{p: p, dpLog: dpLog, client: &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}}
	var static []sdk.Instance
	for _, delay := range []time.Duration{2 * time.Millisecond, 2 * time.Millisecond, 12 * time.Millisecond} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		s := &server{ln: ln, delay: delay}
		addr := ln.Addr().String()
		s.rep = sdk.NewReporter(sdk.ReporterOptions{Mixer: p.dpMixer.Addr(), Token: backTok, Service: backend, Instance: addr, Logger: dpLog,
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
		s.reg = sdk.StartRegistrar(sdk.RegistrarOptions{MeshCore: p.dpCore.Addr(), Token: backTok,
			Registration: sdk.Registration{Service: backend, Instance: addr, Addr: addr, TTLSeconds: 10}})
		s.cfg = sdk.NewConfigWatcher(sdk.ConfigWatcherOptions{ConfigCenter: p.dpCenter.Addr(), Service: backend, Instance: addr, Token: backTok, Wait: 5 * time.Second})
		s.cfg.Start()
		l.servers = append(l.servers, s)
		static = append(static, sdk.Instance{Instance: addr, Addr: addr, Weight: 100, StaticWeight: 100, Healthy: true})
	}
	l.slow = l.servers[len(l.servers)-1].ln.Addr().String()
	frontAddr := freeAddr()
	l.reg = sdk.StartRegistrar(sdk.RegistrarOptions{MeshCore: p.dpCore.Addr(), Token: frontTok,
		Registration: sdk.Registration{Service: front, Instance: frontAddr, Addr: frontAddr, TTLSeconds: 10}})
	l.frontTok = frontTok
	l.rep = sdk.NewReporter(sdk.ReporterOptions{Mixer: p.dpMixer.Addr(), Token: frontTok, Service: front, Instance: frontAddr, Logger: dpLog})
	l.rep.Start()
	l.cfg = sdk.NewConfigWatcher(sdk.ConfigWatcherOptions{ConfigCenter: p.dpCenter.Addr(), Service: front, Instance: frontAddr, Token: frontTok,
		Calls: []string{backend}, Wait: 5 * time.Second})
	l.cfg.Start()
	l.disc = sdk.NewDiscovery(sdk.DiscoveryOptions{MeshCore: p.dpPoll.Addr(), Token: frontTok, Wait: 5 * time.Second})
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
				l.call(cctx, l.rep)
			}
		}()
	}
	return l, nil
}

// startSkewed starts another chaos-front data plane whose clock is skew
// off (its reporter stamps its windows with that clock), calling backend
// rate times a second like the first, until stop.
func (l *load) startSkewed(ctx context.Context, skew time.Duration, rate int) (stop func()) {
	instance := freeAddr()
	rep := sdk.NewReporter(sdk.ReporterOptions{Mixer: l.p.dpMixer.Addr(), Token: l.frontTok, Service: front, Instance: instance,
		Now: func() time.Time { return time.Now().Add(skew) }, Logger: l.dpLog})
	rep.Start()
	l.skewedMu.Lock()
	l.skewed = append(l.skewed, rep)
	l.skewedMu.Unlock()
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for {
			select {
			case <-cctx.Done():
				return
			case <-tick.C:
			}
			l.call(cctx, rep)
		}
	}()
	return func() {
		cancel()
		<-done
		rep.Close()
	}
}

// call makes one call of front to backend, on the instance the SDK picks,
// and reports it with rep.
func (l *load) call(ctx context.Context, rep *sdk.Reporter) {
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
	rep.RecordCall(backend, in.Instance, time.Since(start), err != nil, false)
}

// running are the reporters of the steady load (chaos-front's and the
// backend instances').
func (l *load) running() []*sdk.Reporter {
	r := []*sdk.Reporter{l.rep}
	for _, s := range l.servers {
		r = append(r, s.rep)
	}
	return r
}

// reporters are every Reporter of the load, those of the data planes a
// scenario started and stopped included.
func (l *load) reporters() []*sdk.Reporter {
	r := l.running()
	l.skewedMu.Lock()
	r = append(r, l.skewed...)
	l.skewedMu.Unlock()
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

// sent is, per backend instance, the windows its reporter had accepted.
func (l *load) sent() map[string]int64 {
	out := map[string]int64{}
	for _, s := range l.servers {
		out[s.ln.Addr().String()] = s.rep.Stats().Sent
	}
	return out
}
