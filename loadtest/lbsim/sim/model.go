// Package sim is a closed-loop simulation of one service's load balancing in
// simulated time: callers pick instances by a strategy, instances are queues
// with workers, a service time and an error rate, and every caller and
// instance reports telemetry each window through the SDK's Reporter; the
// reports reach the weight-calculator's own code (calculator.Core), whose
// policies reach the callers after a delay, merged with the registry as
// mesh-core merges them. Everything is driven by one event queue and seeded
// random sources, so a run is deterministic and ten simulated minutes take
// seconds.
package sim

import (
	"math"
	"math/rand/v2"
	"time"
)

// Behavior is how an instance serves at some moment.
type Behavior struct {
	Slowdown float64 // service time multiplier (1: nominal)
	ErrRate  float64 // share of served requests that fail after being served
	FastFail float64 // share of requests that fail at once, without being served
}

// Healthy is the nominal behavior.
var Healthy = Behavior{Slowdown: 1}

// InstanceSpec is one instance of the simulated service.
type InstanceSpec struct {
	ID      string
	Zone    string
	Class   string        // instances of one class are identical while healthy
	Workers int           // requests served at once; more wait in a FIFO queue
	Service time.Duration // mean service time (gamma distributed, shape 4)
	JoinAt  time.Duration // when it registers (0: from the start)
	// Cold: after joining, its service time starts this many times slower
	// and warms up linearly over Warmup (a JIT, a cache).
	Cold   float64
	Warmup time.Duration
	// Behave gives its behavior at t (nil: always Healthy).
	Behave func(t time.Duration) Behavior
}

// Capacity is the requests per second the instance serves when healthy and warm.
func (s *InstanceSpec) Capacity() float64 { return float64(s.Workers) / s.Service.Seconds() }

func (s *InstanceSpec) behavior(t time.Duration) Behavior {
	b := Healthy
	if s.Behave != nil {
		b = s.Behave(t)
	}
	if s.Cold > 1 && s.Warmup > 0 {
		if age := t - s.JoinAt; age < s.Warmup {
			b.Slowdown *= 1 + (s.Cold-1)*(1-float64(age)/float64(s.Warmup))
		}
	}
	return b
}

// Scenario is one simulated situation.
type Scenario struct {
	Name        string
	Description string
	Instances   []InstanceSpec
	Callers     int
	Rate        float64       // requests per second, all callers together
	Duration    time.Duration // simulated
	Warmup      time.Duration // not measured
	Timeout     time.Duration // callers give up on a request after this long
	// CallerZones places caller i in CallerZones[i % len] (none: callers
	// have no zone); a request to an instance of another zone takes
	// CrossZoneRTT more.
	CallerZones  []string
	CrossZoneRTT time.Duration
	// SteadyAfter: weights of identical healthy instances are compared from then on.
	SteadyAfter time.Duration
}

// gammaService draws a service time of mean m: gamma with shape 4 (CV 0.5),
// less variable than an exponential, as request handlers usually are.
func gammaService(r *rand.Rand, m float64) float64 {
	return m * (r.ExpFloat64() + r.ExpFloat64() + r.ExpFloat64() + r.ExpFloat64()) / 4
}

// histogram holds latencies in buckets 1 % wide from 10 µs, for quantiles.
type histogram struct {
	counts []int64
	n      int64
}

const histBase = 10e3 // ns

func (h *histogram) add(ns float64) {
	b := 0
	if ns > histBase {
		b = int(math.Log(ns/histBase) / math.Log(1.01))
	}
	if b >= len(h.counts) {
		h.counts = append(h.counts, make([]int64, b+1-len(h.counts))...)
	}
	h.counts[b]++
	h.n++
}

// quantile in milliseconds (upper bound of the bucket).
func (h *histogram) quantile(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(h.n)))
	var seen int64
	for b, c := range h.counts {
		seen += c
		if seen >= rank {
			return histBase * math.Pow(1.01, float64(b+1)) / 1e6
		}
	}
	return 0
}

// workers counts an instance's busy workers and integrates them over time,
// for utilization.
type workers struct {
	size, busy int
	busyInt    float64 // busy-worker nanoseconds
	lastAt     int64
	flushInt   float64 // busyInt at the last report
	flushAt    int64
}

// set changes the busy count at now.
func (w *workers) set(now int64, busy int) {
	w.busyInt += float64(w.busy) * float64(now-w.lastAt)
	w.lastAt, w.busy = now, busy
}

// report is the busy share since the last report.
func (w *workers) report(now int64) float64 {
	w.set(now, w.busy)
	u := 0.0
	if span := float64(now - w.flushAt); span > 0 {
		u = (w.busyInt - w.flushInt) / (span * float64(w.size))
	}
	w.flushInt, w.flushAt = w.busyInt, now
	return u
}

// fifo is a queue of waiting requests.
type fifo[T any] struct {
	items []T
	head  int
}

func (q *fifo[T]) push(x T) { q.items = append(q.items, x) }
func (q *fifo[T]) len() int { return len(q.items) - q.head }

func (q *fifo[T]) pop() (T, bool) {
	var zero T
	if q.head >= len(q.items) {
		return zero, false
	}
	x := q.items[q.head]
	q.items[q.head] = zero
	q.head++
	if q.head > 1024 && q.head*2 > len(q.items) { // reuse the front of the slice
		q.items = append(q.items[:0], q.items[q.head:]...)
		q.head = 0
	}
	return x, true
}
