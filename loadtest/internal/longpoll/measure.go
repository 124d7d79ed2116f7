package longpoll

import (
	"bufio"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Quantiles are ms until 50, 99 and 100 % of some pollers (+Inf: never).
type Quantiles struct{ P50, P99, P100 float64 }

// QuantilesOf sorts ms and reads its quantiles (nearest rank); all +Inf
// when ms is empty.
func QuantilesOf(ms []float64) Quantiles {
	if len(ms) == 0 {
		return Quantiles{math.Inf(1), math.Inf(1), math.Inf(1)}
	}
	slices.Sort(ms)
	pct := func(p float64) float64 { return ms[max(0, int(math.Ceil(p/100*float64(len(ms))))-1)] }
	return Quantiles{pct(50), pct(99), pct(100)}
}

func (q Quantiles) String() string {
	return fmt.Sprintf("p50 %s ms, p99 %s ms, p100 %s ms", Ms(q.P50), Ms(q.P99), Ms(q.P100))
}

// Ms formats milliseconds; "-" when never reached.
func Ms(v float64) string {
	if math.IsInf(v, 1) || math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.1f", v)
}

// Median of vs (+Inf sorts last); NaN when empty.
func Median(vs []float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	vs = slices.Clone(vs)
	slices.Sort(vs)
	return vs[len(vs)/2]
}

// SelfCPU is this process's user+system CPU time so far, from getrusage
// (microseconds, finer than /proc's clock ticks).
func SelfCPU() float64 {
	u, s := SelfUserSys()
	return u + s
}

// SelfUserSys is SelfCPU in user and system time.
func SelfUserSys() (user, sys float64) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return math.NaN(), math.NaN()
	}
	return float64(ru.Utime.Nano()) / 1e9, float64(ru.Stime.Nano()) / 1e9
}

// CheckFiles fails when a process may not open n more files: each poller
// is a connection, in this process and in the server's (which inherits
// this process's limit). Go raises the soft limit to the hard one at start.
func CheckFiles(n int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	const spare = 200 // etcd, the server's own sockets, /proc reads
	if uint64(n+spare) > lim.Cur {
		return fmt.Errorf("%d pollers need about %d open files in this process and in the server's, but RLIMIT_NOFILE is %d (hard %d): "+
			"raise it (ulimit -n; raising the hard limit needs CAP_SYS_RESOURCE) or run fewer pollers", n, n+spare, lim.Cur, lim.Max)
	}
	return nil
}

// Metrics scrapes a server's Prometheus /metrics.
type Metrics struct {
	URL string
	HC  *http.Client
}

// NewMetrics scrapes http://addr/metrics.
func NewMetrics(addr string) *Metrics {
	return &Metrics{URL: "http://" + addr + "/metrics", HC: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}}
}

// Close drops its idle connection (or it holds a server's graceful stop).
func (m *Metrics) Close() { m.HC.CloseIdleConnections() }

// Read returns the unlabelled series named; NaN for those absent.
func (m *Metrics) Read(names ...string) []float64 {
	out := make([]float64, len(names))
	for i := range out {
		out[i] = math.NaN()
	}
	resp, err := m.HC.Get(m.URL)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	for s := bufio.NewScanner(resp.Body); s.Scan(); {
		line := s.Text()
		for i, n := range names {
			if f, ok := strings.CutPrefix(line, n+" "); ok {
				out[i], _ = strconv.ParseFloat(strings.TrimSpace(f), 64)
			}
		}
	}
	return out
}

// UntilQuiet waits until a process, whose CPU time so far cpu reads, spends
// over half a second at most twice its idle rate plus one clock tick (at
// most 5 minutes), and returns how long that took; 0 when cpu is NaN (no
// process to read).
func UntilQuiet(cpu func() float64, idlePerSec float64) time.Duration {
	const slice = 500 * time.Millisecond
	t0, prev := time.Now(), cpu()
	if math.IsNaN(prev) {
		return 0
	}
	for time.Since(t0) < 5*time.Minute {
		time.Sleep(slice)
		cur := cpu()
		if cur-prev <= 2*idlePerSec*slice.Seconds()+0.01 {
			break
		}
		prev = cur
	}
	return time.Since(t0)
}
