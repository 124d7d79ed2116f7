// Package demo is Sextant's demo: a Kitex comment service whose instances
// have different capacities, a front that calls it with mixed priorities
// through the Sextant SDK, and a load driver. `make demo` (the command
// examples/demo/cmd/demo-dev) runs it beside the control plane of `sextant
// dev` and prints, once a second, each instance's weight and share of
// traffic and the admission threshold. The end-to-end tests drive the same
// pieces.
package demo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/pkg/rpcinfo"
	"github.com/cloudwego/kitex/server"

	"github.com/sextant-mesh/sextant/kitex_gen/sextant/demo"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/demo/comment"
	"github.com/sextant-mesh/sextant/sdk"
	"github.com/sextant-mesh/sextant/sdk/kitexsdk"
)

// The demo's services: the backend, and the front that calls it.
const (
	Service      = "comment-svc"
	FrontService = "front"
)

// ControlPlane is where the demo finds Sextant.
type ControlPlane struct {
	MeshCore string // HTTP host:port
	Mixer    string // HTTP host:port
	Window   time.Duration
	// Tokens holds each service's data-plane token, by service: what
	// `sextant token create --service S` prints (IssueTokens in the demo).
	Tokens map[string]string
}

// Backend is one instance of the comment service: it serves at most
// Concurrency requests at once, each taking Cost.
type Backend struct {
	ID        string
	cost      atomic.Int64
	errRate   atomic.Uint64 // math.Float64bits of the share of requests that fail
	errSeq    atomic.Uint64 // requests numbered while an error rate is set
	srv       *KitexServer
	disc      *sdk.Discovery
	rep       *sdk.Reporter
	registrar *sdk.Registrar
}

// StartBackend starts an instance on a free port, registered in mesh-core.
func StartBackend(cp ControlPlane, cost time.Duration, concurrency int, log *slog.Logger) (*Backend, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &Backend{ID: ln.Addr().String()}
	b.cost.Store(int64(cost))
	b.disc = sdk.NewDiscovery(sdk.DiscoveryOptions{MeshCore: cp.MeshCore, Token: cp.Tokens[Service], Logger: log})
	b.disc.Watch(Service, nil, nil)
	b.rep = sdk.NewReporter(sdk.ReporterOptions{Mixer: cp.Mixer, Token: cp.Tokens[Service], Service: Service, Instance: b.ID, Window: cp.Window, Logger: log})
	gate := sdk.NewGate(sdk.GateOptions{
		Concurrency: concurrency,
		Reporter:    b.rep,
		Threshold: func() int32 {
			if s, ok := b.disc.Get(Service); ok {
				return s.Threshold(b.ID)
			}
			return 0
		},
	})
	b.srv = ServeKitex(ln, Service, func(opts ...server.Option) server.Server {
		return comment.NewServer(&handler{b: b}, opts...)
	}, server.WithSuite(kitexsdk.NewServerSuite(gate, nil)))
	b.rep.Start()
	b.registrar = sdk.StartRegistrar(sdk.RegistrarOptions{MeshCore: cp.MeshCore, Token: cp.Tokens[Service], Logger: log,
		Registration: sdk.Registration{Service: Service, Instance: b.ID, Addr: b.ID, TTLSeconds: 10}})
	return b, nil
}

// SetCost changes how long each request takes (5x makes a slow instance).
func (b *Backend) SetCost(d time.Duration) { b.cost.Store(int64(d)) }

// SetErrorRate makes that share of the requests (0..1) fail after their
// cost, spread evenly (every tenth for 0.1) so that a few seconds of calls
// show the rate exactly: a faulty instance for outlier ejection.
func (b *Backend) SetErrorRate(r float64) { b.errRate.Store(math.Float64bits(min(max(r, 0), 1))) }

// ErrInjected is the error of the requests SetErrorRate fails.
var ErrInjected = errors.New("demo: injected failure")

// Close deregisters and stops the instance.
func (b *Backend) Close() {
	b.registrar.Close()
	_ = b.srv.Stop()
	b.rep.Close()
	b.disc.Close()
}

type handler struct{ b *Backend }

func (h *handler) Get(_ context.Context, req *demo.GetRequest) (*demo.GetResponse, error) {
	time.Sleep(time.Duration(h.b.cost.Load()))
	if r := math.Float64frombits(h.b.errRate.Load()); r > 0 {
		// Request n fails when floor(n x r) steps up: exactly r of them.
		n := h.b.errSeq.Add(1)
		if math.Floor(float64(n)*r) > math.Floor(float64(n-1)*r) {
			return nil, ErrInjected
		}
	}
	return &demo.GetResponse{Instance: h.b.ID, Text: "comment " + req.Id}, nil
}

// Front calls the comment service through the Sextant SDK: discovery and
// weights from mesh-core, priorities in metainfo, calls reported.
type Front struct {
	client comment.Client
	disc   *sdk.Discovery
	rep    *sdk.Reporter
}

// NewFront makes the caller "front".
func NewFront(cp ControlPlane, timeout time.Duration, log *slog.Logger) (*Front, error) {
	f := &Front{
		disc: sdk.NewDiscovery(sdk.DiscoveryOptions{MeshCore: cp.MeshCore, Token: cp.Tokens[FrontService], Logger: log}),
		rep: sdk.NewReporter(sdk.ReporterOptions{Mixer: cp.Mixer, Token: cp.Tokens[FrontService], Service: FrontService, Instance: "front-1",
			Window: cp.Window, Logger: log}),
	}
	opts := append(kitexsdk.ClientOptions(Service, f.disc, f.rep, nil),
		client.WithRPCTimeout(timeout),
		client.WithClientBasicInfo(&rpcinfo.EndpointBasicInfo{ServiceName: FrontService}))
	c, err := comment.NewClient(Service, opts...)
	if err != nil {
		return nil, err
	}
	f.client = c
	f.rep.Start()
	return f, nil
}

// Snapshot is mesh-core's last answer for the comment service, as the front sees it.
func (f *Front) Snapshot() (*sdk.Snapshot, bool) { return f.disc.Get(Service) }

// Call makes one call at priority; it returns the instance that served it.
func (f *Front) Call(ctx context.Context, priority int32) (string, error) {
	resp, err := f.client.Get(kitexsdk.WithPriority(ctx, priority), &demo.GetRequest{Id: "1"})
	if err != nil {
		return "", err
	}
	return resp.Instance, nil
}

// Close stops the front.
func (f *Front) Close() {
	f.rep.Close()
	f.disc.Close()
}

// Recorder keeps, per second, which instance served each call, the
// latencies, and the outcome by priority.
type Recorder struct {
	mu      sync.Mutex
	seconds map[int64]*Second
	lastErr error
}

// LastError is the last error of a call that was neither served nor shed.
func (r *Recorder) LastError() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastErr
}

// Second is one second of calls.
type Second struct {
	ByInstance map[string]int
	Latencies  []time.Duration
	OK, Shed   map[int32]int
	Failed     map[int32]int
}

// NewRecorder makes an empty recorder.
func NewRecorder() *Recorder { return &Recorder{seconds: map[int64]*Second{}} }

func (r *Recorder) record(at time.Time, instance string, priority int32, latency time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := at.Unix()
	s := r.seconds[k]
	if s == nil {
		// A long demo keeps the last ten minutes only.
		delete(r.seconds, k-600)
		s = &Second{ByInstance: map[string]int{}, OK: map[int32]int{}, Shed: map[int32]int{}, Failed: map[int32]int{}}
		r.seconds[k] = s
	}
	switch {
	case err == nil:
		s.ByInstance[instance]++
		s.OK[priority]++
		s.Latencies = append(s.Latencies, latency)
	case isShed(err):
		s.Shed[priority]++
	default:
		s.Failed[priority]++
		r.lastErr = err
	}
}

// Window merges the seconds in [from, to).
func (r *Recorder) Window(from, to time.Time) Second {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := Second{ByInstance: map[string]int{}, OK: map[int32]int{}, Shed: map[int32]int{}, Failed: map[int32]int{}}
	for k := from.Unix(); k < to.Unix(); k++ {
		s := r.seconds[k]
		if s == nil {
			continue
		}
		for i, n := range s.ByInstance {
			out.ByInstance[i] += n
		}
		for p, n := range s.OK {
			out.OK[p] += n
		}
		for p, n := range s.Shed {
			out.Shed[p] += n
		}
		for p, n := range s.Failed {
			out.Failed[p] += n
		}
		out.Latencies = append(out.Latencies, s.Latencies...)
	}
	return out
}

// P99 is the 99th percentile latency of the calls in s.
func (s Second) P99() time.Duration {
	if len(s.Latencies) == 0 {
		return 0
	}
	l := slices.Clone(s.Latencies)
	slices.Sort(l)
	return l[(len(l)*99)/100]
}

// Share is instance's share of the successful calls in s.
func (s Second) Share(instance string) float64 {
	total := 0
	for _, n := range s.ByInstance {
		total += n
	}
	if total == 0 {
		return 0
	}
	return float64(s.ByInstance[instance]) / float64(total)
}

// Priorities mixes low (10), normal (64) and high (120) priority traffic.
func Priorities() int32 { return []int32{10, 64, 120}[rand.IntN(3)] }

// ClosedLoop runs workers that each call, wait for the answer, and call
// again, until ctx ends.
func ClosedLoop(ctx context.Context, f *Front, workers int, priority func() int32, rec *Recorder) *sync.WaitGroup {
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				call(ctx, f, priority(), rec)
			}
		}()
	}
	return &wg
}

// OpenLoop sends rate calls a second whatever the answers, until ctx ends.
func OpenLoop(ctx context.Context, f *Front, rate func() int, priority func() int32, rec *Recorder) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		credit := 0.0
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			credit += float64(rate()) / 100
			for ; credit >= 1; credit-- {
				wg.Add(1)
				go func() {
					defer wg.Done()
					call(ctx, f, priority(), rec)
				}()
			}
		}
	}()
	return &wg
}

func call(ctx context.Context, f *Front, priority int32, rec *Recorder) {
	start := time.Now()
	instance, err := f.Call(ctx, priority)
	if ctx.Err() != nil {
		return
	}
	rec.record(start, instance, priority, time.Since(start), err)
}

// Report formats one second for a newcomer: each instance's weight and
// share of traffic, and the admission threshold.
func Report(s Second, snap *sdk.Snapshot, backends []*Backend) string {
	out := ""
	for _, b := range backends {
		w := int32(-1)
		if snap != nil {
			for _, in := range snap.Instances {
				if in.Instance == b.ID {
					w = in.Weight
				}
			}
		}
		out += fmt.Sprintf("  %-21s cost %-6s weight %4d  share %5.1f%%\n", b.ID, time.Duration(b.cost.Load()), w, 100*s.Share(b.ID))
	}
	threshold, level, state := int32(0), int32(0), "normal"
	if snap != nil {
		threshold, level, state = snap.Overload.AdmitMinPriority, snap.Overload.Level(), snap.Overload.State
	}
	ok, shed := 0, 0
	for _, n := range s.OK {
		ok += n
	}
	for _, n := range s.Shed {
		shed += n
	}
	return out + fmt.Sprintf("  admission: %s, admit_min_priority %d (level %d: users %d..63 of it admitted); %d ok, %d shed, p99 %s\n",
		state, threshold, level, level%sdk.UserPriorities, ok, shed, s.P99())
}

func kitexShed(err error) bool { return kitexsdk.IsShed(err) }
