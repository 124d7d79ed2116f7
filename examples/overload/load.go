package overload

import (
	"context"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Class is one kind of request the load sends: GETs of Path followed by an
// id, Share of the requests.
type Class struct {
	Name  string
	Path  string // "/feed/"
	Share float64
}

// Load is an open-loop load generator on the front: Rate requests a second
// arrive whatever the answers, each in its own goroutine with its own
// Timeout, from a random one of Users users (x-user-id, which the front
// hashes into a user priority).
type Load struct {
	URL     string // http://host:port
	Timeout time.Duration
	Users   int

	rate    atomic.Uint64 // math.Float64bits
	classes atomic.Pointer[[]Class]
	client  *http.Client
}

// NewLoad makes a generator of the front at addr; it sends nothing until Run.
func NewLoad(addr string, timeout time.Duration) *Load {
	l := &Load{URL: "http://" + addr, Timeout: timeout, Users: 100_000}
	l.client = &http.Client{Timeout: timeout, Transport: &http.Transport{
		MaxIdleConns: 4096, MaxIdleConnsPerHost: 4096, IdleConnTimeout: 30 * time.Second,
	}}
	return l
}

// Set changes the arrival rate and the mix of classes.
func (l *Load) Set(rate float64, classes []Class) {
	l.rate.Store(math.Float64bits(rate))
	c := slices.Clone(classes)
	l.classes.Store(&c)
}

// Rate is the arrival rate in force.
func (l *Load) Rate() float64 { return math.Float64frombits(l.rate.Load()) }

// Run sends until ctx ends; Wait on the result for the requests in flight.
func (l *Load) Run(ctx context.Context, rec *Recorder) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		const tick = 5 * time.Millisecond
		t := time.NewTicker(tick)
		defer t.Stop()
		last := time.Now()
		credit := 0.0
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				// Arrivals by elapsed time, so that a late tick sends the
				// requests it owes.
				credit += l.Rate() * now.Sub(last).Seconds()
				last = now
			}
			for ; credit >= 1; credit-- {
				cls := l.pick()
				wg.Add(1)
				go func() {
					defer wg.Done()
					l.send(ctx, cls, rec)
				}()
			}
		}
	}()
	return &wg
}

// CloseIdle closes the generator's idle connections (before the front stops).
func (l *Load) CloseIdle() { l.client.CloseIdleConnections() }

func (l *Load) pick() Class {
	cs := *l.classes.Load()
	r := rand.Float64()
	for _, c := range cs {
		if r < c.Share {
			return c
		}
		r -= c.Share
	}
	return cs[len(cs)-1]
}

func (l *Load) send(ctx context.Context, cls Class, rec *Recorder) {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.URL+cls.Path+strconv.Itoa(rand.IntN(1000)), nil)
	if err != nil {
		panic(err)
	}
	req.Header.Set("x-user-id", "u"+strconv.Itoa(rand.IntN(l.Users)))
	resp, err := l.client.Do(req)
	r := Result{At: start, Class: cls.Name}
	var body []byte
	if err == nil {
		body, _ = io.ReadAll(io.LimitReader(resp.Body, 1024))
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	r.Latency = time.Since(start)
	if ctx.Err() != nil {
		return // stopped: not an outcome
	}
	switch {
	case err != nil:
		r.Outcome = Failed
		var te interface{ Timeout() bool }
		if errors.As(err, &te) && te.Timeout() {
			r.Outcome = TimedOut
		}
		r.Err = err.Error()
	case resp.StatusCode == http.StatusOK:
		r.Outcome = OK
		if l, err := strconv.Atoi(resp.Header.Get(LevelHeader)); err == nil {
			r.Level = int32(l)
		}
	case resp.StatusCode == http.StatusServiceUnavailable:
		r.Outcome = Shed
		r.Place = FrontGate // the front's own Gate names no place
		if p, ok := ParsePlace(resp.Header.Get(ShedAtHeader)); ok {
			r.Place = p
		}
	case resp.StatusCode == http.StatusGatewayTimeout:
		r.Outcome = TimedOut
		r.Err = resp.Status + " " + string(body)
	default:
		r.Outcome = Failed
		r.Err = resp.Status + " " + string(body)
	}
	rec.add(r)
}

// Outcome is how a request ended.
type Outcome int

// Outcomes.
const (
	OK       Outcome = iota
	Shed             // refused by admission somewhere (Place)
	TimedOut         // the generator's timeout, or a timeout in the chain
	Failed           // anything else
)

// Result is one request as the generator saw it.
type Result struct {
	At      time.Time // sent
	Class   string
	Outcome Outcome
	Place   Place // where it was shed
	Level   int32 // the admission level the front gave a request served
	Latency time.Duration
	Err     string
}

// Recorder keeps every request's Result.
type Recorder struct {
	mu  sync.Mutex
	all []Result
}

func (r *Recorder) add(res Result) {
	r.mu.Lock()
	r.all = append(r.all, res)
	r.mu.Unlock()
}

// Summary is the requests sent in a span.
type Summary struct {
	Span      time.Duration
	Sent      int
	ByOutcome [4]int
	ShedAt    [Places]int
	// By class: requests sent and served.
	SentBy, OK map[string]int
	Latencies  []time.Duration // of the requests served
	Levels     []int32         // their admission levels, in the same order
	LastErr    string
	LastShed   time.Time // the send time of the span's last shed request
}

// Window summarizes the requests sent in [from, to).
func (r *Recorder) Window(from, to time.Time) Summary {
	s := Summary{Span: to.Sub(from), SentBy: map[string]int{}, OK: map[string]int{}}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, res := range r.all {
		if res.At.Before(from) || !res.At.Before(to) {
			continue
		}
		s.Sent++
		s.SentBy[res.Class]++
		s.ByOutcome[res.Outcome]++
		switch res.Outcome {
		case OK:
			s.OK[res.Class]++
			s.Latencies = append(s.Latencies, res.Latency)
			s.Levels = append(s.Levels, res.Level)
		case Shed:
			s.ShedAt[res.Place]++
			if res.At.After(s.LastShed) {
				s.LastShed = res.At
			}
		default:
			s.LastErr = res.Err
		}
	}
	return s
}

// Goodput is the requests served a second.
func (s Summary) Goodput() float64 {
	if s.Span <= 0 {
		return 0
	}
	return float64(s.ByOutcome[OK]) / s.Span.Seconds()
}

// Quantile of the latency of the requests served.
func (s Summary) Quantile(q float64) time.Duration {
	if len(s.Latencies) == 0 {
		return 0
	}
	l := slices.Clone(s.Latencies)
	slices.Sort(l)
	return l[min(len(l)-1, int(math.Ceil(q*float64(len(l))))-1)]
}

// QuantileByLevel splits the requests served into parts groups of equal
// size by admission level, lowest first, and gives quantile q of each
// group's latency: under overload the lowest levels admitted wait longest.
func (s Summary) QuantileByLevel(q float64, parts int) []time.Duration {
	idx := make([]int, len(s.Latencies))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return int(s.Levels[a]) - int(s.Levels[b]) })
	var out []time.Duration
	for k := range parts {
		part := Summary{}
		for _, i := range idx[k*len(idx)/parts : (k+1)*len(idx)/parts] {
			part.Latencies = append(part.Latencies, s.Latencies[i])
		}
		out = append(out, part.Quantile(q))
	}
	return out
}

// Success is the share of class's requests served (1 when none was sent).
func (s Summary) Success(class string) float64 {
	if s.SentBy[class] == 0 {
		return 1
	}
	return float64(s.OK[class]) / float64(s.SentBy[class])
}

// ShedTotal is the requests shed anywhere.
func (s Summary) ShedTotal() int { return s.ByOutcome[Shed] }

// ShedAtFront is the share of the shed requests shed at the front, before
// any work (0 when none was shed).
func (s Summary) ShedAtFront() float64 {
	if s.ShedTotal() == 0 {
		return 0
	}
	return float64(s.ShedAt[FrontGate]+s.ShedAt[FrontClient]) / float64(s.ShedTotal())
}
