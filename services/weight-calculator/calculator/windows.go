package calculator

import (
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/reportbatch"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/aggregator"
)

// Store keeps, per (service, instance), a ring of fixed-length windows of what
// the instance reports about itself (server) and what its callers report about
// it (callers), plus running totals since the series was first seen.
// Windows are placed by the report's timestamp; a record older than the oldest
// window kept is counted as late and dropped.
type Store struct {
	window    time.Duration
	count     int
	maxSeries int

	mu       sync.RWMutex // guards services; never taken while holding a serviceWindows' mu
	services map[string]*serviceWindows
	series   atomic.Int64
	scratch  sync.Pool // of *ingestScratch
}

type serviceWindows struct {
	mu        sync.Mutex
	removed   bool // taken out of the store: writers must look it up again
	instances map[string]*instanceWindows
	denials   map[denialKey]*denialCount
	// units count what the service's unit_routing rules decided of its
	// callers' requests (docs/units.md).
	units map[unitKey]*denialCount
	// callers are the services that reported calls to this one: what the
	// access inspection compares with the access rules.
	callers map[string]*callerCount
	// zones are the requests by the callers' zone, for zone-aware routing.
	zones map[string]*zoneDemand
}

// zoneDemand is the requests callers in one zone sent the service, by
// window (a ring like an instance's).
type zoneDemand struct {
	index    []int64
	requests []int64
}

// maxZonesPerService bounds the zones whose demand is kept per service.
const maxZonesPerService = api.MaxZones

// addZoneDemand counts requests from callers in zone in window index; sw is
// locked.
func (sw *serviceWindows) addZoneDemand(zone string, index, requests int64, count int) {
	zd := sw.zones[zone]
	if zd == nil {
		if len(sw.zones) >= maxZonesPerService {
			return
		}
		if sw.zones == nil {
			sw.zones = map[string]*zoneDemand{}
		}
		zd = &zoneDemand{index: make([]int64, count), requests: make([]int64, count)}
		sw.zones[strings.Clone(zone)] = zd
	}
	slot := index % int64(count)
	if zd.index[slot] != index {
		zd.index[slot], zd.requests[slot] = index, 0
	}
	zd.requests[slot] += requests
}

type callerCount struct {
	requests int64
	lastSeen time.Time
}

// maxCallers bounds the callers kept per service.
const maxCallers = 1000

type denialCount struct {
	count    int64
	lastSeen time.Time
}

type denialKey struct{ caller, rule string }

type unitKey struct{ caller, rule, unit, outcome string }

type instanceWindows struct {
	zone      string // from its own reports
	firstSeen time.Time
	lastSeen  time.Time
	ring      []Window
	newest    int64 // index of the newest window received
	totals    Totals
}

// Window is one window of one instance.
type Window struct {
	StartMs int64     `json:"start_ms"`
	Server  ServerAgg `json:"server"`
	Callers CallerAgg `json:"callers"`
	index   int64     // StartMs / window length; 0 for an unused slot
}

// ServerAgg merges the instance's own reports in one window.
type ServerAgg struct {
	Records            int64           `json:"records"`
	Requests           int64           `json:"requests"`
	CPUUtil            float64         `json:"cpu_util"`          // highest reported
	QueueTimeMsAvg     float64         `json:"queue_time_ms_avg"` // weighted by requests
	QueueTimeMsP99     float64         `json:"queue_time_ms_p99"` // highest reported
	Inflight           int64           `json:"inflight"`          // highest reported
	ClientTimeouts     int64           `json:"client_timeouts"`
	RequestsByPriority map[int32]int64 `json:"requests_by_priority,omitempty"`
	// By admission level; a record without levels counts each priority at
	// the top level of its class (what an older SDK's shedding matches).
	RequestsByLevel map[int32]int64 `json:"requests_by_level,omitempty"`
	queueTimeSum    float64
}

// CallerAgg merges what every caller reported about the instance in one window.
type CallerAgg struct {
	Records      int64   `json:"records"`
	Requests     int64   `json:"requests"`
	Errors       int64   `json:"errors"`
	Timeouts     int64   `json:"timeouts"`
	LatencyMsAvg float64 `json:"latency_ms_avg"` // weighted by requests
	LatencyMsP99 float64 `json:"latency_ms_p99"` // highest reported
	latencySum   float64
}

// Totals count everything a series received since it was first seen.
type Totals struct {
	ServerRecords  int64 `json:"server_records"`
	ServerRequests int64 `json:"server_requests"`
	EdgeRecords    int64 `json:"edge_records"`
	EdgeRequests   int64 `json:"edge_requests"`
	EdgeErrors     int64 `json:"edge_errors"`
	EdgeTimeouts   int64 `json:"edge_timeouts"`
	LateRecords    int64 `json:"late_records"`
	FutureRecords  int64 `json:"future_records"`
}

// Outcome is what became of one record.
type Outcome int

// Outcomes of Add*.
const (
	Accepted Outcome = iota
	Late             // older than the oldest window kept
	Refused          // a new series beyond the series limit
	Invalid          // missing names or non-finite, negative numbers
	Future           // more than MaxAheadWindows ahead of the calculator's clock
)

// MaxAheadWindows is how far ahead of the calculator's clock a record's
// window may be. A record further ahead comes from a data plane whose
// clock is off (and a mixer that could not correct it: no
// X-Sextant-Sent-At); kept, it would move its series' newest window ahead
// and make every record of the series' present time count as late.
const MaxAheadWindows = 2

// NewStore keeps count windows of length window, for at most maxSeries series.
func NewStore(window time.Duration, count, maxSeries int) *Store {
	return &Store{window: window, count: count, maxSeries: maxSeries, services: map[string]*serviceWindows{},
		scratch: sync.Pool{New: func() any { return new(ingestScratch) }}}
}

// Tally counts what became of a batch's records, by kind and outcome.
type Tally [3][5]int64

// The kinds of records, as Tally indexes them.
const (
	KindServer = iota
	KindEdge
	KindDenial
)

// KindNames are the kinds as metrics label them.
var KindNames = [3]string{"server", "edge", "denial"}

// NotAccepted is how many records of the tally were not accepted.
func (t *Tally) NotAccepted() int64 {
	var n int64
	for k := range t {
		n += t[k][Late] + t[k][Refused] + t[k][Invalid] + t[k][Future]
	}
	return n
}

// ingestScratch is what one Ingest reuses: the parts reader and the call
// edges of the batch, grouped by callee service before they are merged.
type ingestScratch struct {
	rd      reportbatch.Reader
	edges   []edgeRef
	grouped []edgeRef
	// group numbers the callee services of a batch in the order they first
	// appear; its keys point into the batch, so it is cleared before
	// Ingest returns. ends[g] is where group g ends in grouped.
	group map[string]int32
	ends  []int32
}

// groupByService puts sc.edges into sc.grouped, the edges of each callee
// service together (in the order of the batch), and returns the groups'
// ends: a counting sort, linear in the edges, where sorting by name moved
// every edge log(n) times.
func (sc *ingestScratch) groupByService() []int32 {
	if sc.group == nil {
		sc.group = map[string]int32{}
	}
	ends := sc.ends[:0]
	for i := range sc.edges {
		name := sc.edges[i].call.CalleeService
		g, ok := sc.group[name]
		if !ok {
			g = int32(len(ends))
			sc.group[name] = g
			ends = append(ends, 0)
		}
		ends[g]++
	}
	// counts to starts, then to ends as the edges are placed
	var at int32
	for g, n := range ends {
		ends[g] = at
		at += n
	}
	sc.grouped = slices.Grow(sc.grouped[:0], len(sc.edges))[:len(sc.edges)]
	for i := range sc.edges {
		g := sc.group[sc.edges[i].call.CalleeService]
		sc.grouped[ends[g]] = sc.edges[i]
		ends[g]++
	}
	if len(ends) > maxScratchGroups {
		sc.group = nil // clearing costs what the map grew to
	} else {
		clear(sc.group)
	}
	sc.ends = ends
	return ends
}

// maxScratchGroups bounds the callee services an ingest keeps a map for.
const maxScratchGroups = 4096

type edgeRef struct {
	tsMs   int64
	caller string // the reporter's service; "" when unknown
	zone   string // the reporter's zone; "" when unknown
	call   api.Call
}

// Ingest merges every record of a batch received at now. The call edges of
// the batch are merged one callee service at a time, each under one lock.
// It fails on parts it cannot read, having merged those before.
func (s *Store) Ingest(b *aggregator.ReportBatch, now time.Time) (Tally, error) {
	var t Tally
	for _, r := range b.Servers {
		t[KindServer][s.AddServer(r, now)]++
	}
	for _, e := range b.Edges {
		t[KindEdge][s.AddEdge(e, now)]++
	}
	for _, d := range b.Denials {
		t[KindDenial][s.AddDenial(d, now)]++
	}
	if len(b.Parts) == 0 {
		return t, nil
	}
	sc := s.scratch.Get().(*ingestScratch)
	defer s.scratch.Put(sc)
	sc.edges = sc.edges[:0]
	sc.rd.Reset(b.Parts, int(b.PartCount))
	var err error
	for {
		var r *api.Report
		if r, err = sc.rd.Next(); r == nil || err != nil {
			break
		}
		if r.Server != nil {
			t[KindServer][s.addServer(r.Reporter, r.TimestampMs, r.Server, now)]++
		}
		for i := range r.Calls {
			sc.edges = append(sc.edges, edgeRef{tsMs: r.TimestampMs, caller: r.Reporter.Service, zone: r.Reporter.Zone, call: r.Calls[i]})
		}
		for i := range r.DryRunDenials {
			t[KindDenial][s.addDenial(&r.DryRunDenials[i], now)]++
		}
		// Unit routes are tallied with the denials: both are counters of
		// what rules decided, reported back through the config-center.
		for i := range r.UnitRoutes {
			t[KindDenial][s.addUnitRoute(r.Reporter.Service, &r.UnitRoutes[i], now)]++
		}
	}
	start := int32(0)
	for _, end := range sc.groupByService() {
		s.addEdges(sc.grouped[start:end], now, &t)
		start = end
	}
	if len(sc.edges) > maxScratchEdges {
		sc.edges, sc.grouped, sc.group, sc.ends = nil, nil, nil, nil
	}
	return t, err
}

// maxScratchEdges bounds the edges an ingest keeps room for between batches.
const maxScratchEdges = 1 << 16

// AddServer merges what an instance reported about itself.
func (s *Store) AddServer(r *aggregator.ServerRecord, now time.Time) Outcome {
	if r.Reporter == nil {
		return Invalid
	}
	return s.addServer(&api.Reporter{Service: r.Reporter.Service, Instance: r.Reporter.Instance}, r.TimestampMs, &api.ServerStats{
		Requests: r.Requests, CPUUtil: r.CpuUtil, QueueTimeMsAvg: r.QueueTimeMsAvg, QueueTimeMsP99: r.QueueTimeMsP99,
		Inflight: r.Inflight, ClientTimeouts: r.ClientTimeouts,
		RequestsByPriority: r.RequestsByPriority, RequestsByLevel: r.RequestsByLevel,
	}, now)
}

func (s *Store) addServer(rep *api.Reporter, tsMs int64, r *api.ServerStats, now time.Time) Outcome {
	if !finite(r.CPUUtil, r.QueueTimeMsAvg, r.QueueTimeMsP99) || r.Requests < 0 || r.Inflight < 0 || r.ClientTimeouts < 0 {
		return Invalid
	}
	if rep.Service == "" {
		return Invalid
	}
	sw := s.lockedService(rep.Service)
	defer sw.mu.Unlock()
	iw, w, o := s.slot(sw, rep.Instance, tsMs, now)
	if o != Accepted {
		return o
	}
	if rep.Zone != "" && rep.Zone != iw.zone {
		iw.zone = strings.Clone(rep.Zone)
	}
	iw.totals.ServerRecords++
	iw.totals.ServerRequests += r.Requests
	a := &w.Server
	a.Records++
	a.Requests += r.Requests
	a.CPUUtil = max(a.CPUUtil, r.CPUUtil)
	a.queueTimeSum += r.QueueTimeMsAvg * float64(r.Requests)
	a.QueueTimeMsP99 = max(a.QueueTimeMsP99, r.QueueTimeMsP99)
	a.Inflight = max(a.Inflight, r.Inflight)
	a.ClientTimeouts += r.ClientTimeouts
	for p, n := range r.RequestsByPriority {
		if a.RequestsByPriority == nil {
			a.RequestsByPriority = map[int32]int64{}
		}
		a.RequestsByPriority[p] += n
	}
	if a.RequestsByLevel == nil && (len(r.RequestsByLevel) > 0 || len(r.RequestsByPriority) > 0) {
		a.RequestsByLevel = map[int32]int64{}
	}
	for l, n := range r.RequestsByLevel {
		a.RequestsByLevel[l] += n
	}
	if len(r.RequestsByLevel) == 0 {
		for p, n := range r.RequestsByPriority {
			a.RequestsByLevel[api.Level(p, api.UserLevels-1)] += n
		}
	}
	return Accepted
}

// AddEdge merges what one caller reported about a callee instance.
func (s *Store) AddEdge(e *aggregator.CallEdge, now time.Time) Outcome {
	var t Tally
	var caller, zone string
	if e.Caller != nil {
		caller, zone = e.Caller.Service, e.Caller.Zone
	}
	s.addEdges([]edgeRef{{tsMs: e.TimestampMs, caller: caller, zone: zone, call: api.Call{CalleeService: e.CalleeService, CalleeInstance: e.CalleeInstance,
		Requests: e.Requests, Errors: e.Errors, Timeouts: e.Timeouts, LatencyMsAvg: e.LatencyMsAvg, LatencyMsP99: e.LatencyMsP99}}}, now, &t)
	for o, n := range t[KindEdge] {
		if n > 0 {
			return Outcome(o)
		}
	}
	return Invalid
}

// addEdges merges edges of one callee service under one lock.
func (s *Store) addEdges(edges []edgeRef, now time.Time, t *Tally) {
	if len(edges) == 0 {
		return
	}
	if edges[0].call.CalleeService == "" {
		t[KindEdge][Invalid] += int64(len(edges))
		return
	}
	sw := s.lockedService(edges[0].call.CalleeService)
	defer sw.mu.Unlock()
	var cc *callerCount
	for i := range edges {
		switch c := edges[i].caller; {
		case c == "":
			cc = nil
		case i == 0 || c != edges[i-1].caller || cc == nil:
			cc = sw.caller(c, now)
		}
		e := &edges[i].call
		if !finite(e.LatencyMsAvg, e.LatencyMsP99) || e.Requests < 0 || e.Errors < 0 || e.Timeouts < 0 {
			t[KindEdge][Invalid]++
			continue
		}
		iw, w, o := s.slot(sw, e.CalleeInstance, edges[i].tsMs, now)
		t[KindEdge][o]++
		if o != Accepted {
			continue
		}
		iw.totals.EdgeRecords++
		iw.totals.EdgeRequests += e.Requests
		iw.totals.EdgeErrors += e.Errors
		iw.totals.EdgeTimeouts += e.Timeouts
		if cc != nil {
			cc.requests += e.Requests
		}
		if z := edges[i].zone; z != "" {
			sw.addZoneDemand(z, w.index, e.Requests, s.count)
		}
		a := &w.Callers
		a.Records++
		a.Requests += e.Requests
		a.Errors += e.Errors
		a.Timeouts += e.Timeouts
		a.latencySum += e.LatencyMsAvg * float64(e.Requests)
		a.LatencyMsP99 = max(a.LatencyMsP99, e.LatencyMsP99)
	}
}

// caller is the counter of caller, seen now; nil when the service already
// counts maxCallers others. sw is locked.
func (sw *serviceWindows) caller(name string, now time.Time) *callerCount {
	cc := sw.callers[name]
	if cc == nil {
		if len(sw.callers) >= maxCallers {
			return nil
		}
		if sw.callers == nil {
			sw.callers = map[string]*callerCount{}
		}
		cc = &callerCount{}
		sw.callers[strings.Clone(name)] = cc // the key outlives the batch
	}
	cc.lastSeen = now
	return cc
}

// maxDenialKeys bounds the dry-run denial counters kept per service.
const maxDenialKeys = 1000

// AddDenial counts requests an access rule in dry-run mode would have denied.
func (s *Store) AddDenial(d *aggregator.DryRunDenial, now time.Time) Outcome {
	return s.addDenial(&api.DryRunDenial{CalleeService: d.CalleeService, CallerService: d.CallerService, Rule: d.Rule, Count: d.Count}, now)
}

func (s *Store) addDenial(d *api.DryRunDenial, now time.Time) Outcome {
	if d.CalleeService == "" || d.Count < 0 {
		return Invalid
	}
	sw := s.lockedService(d.CalleeService)
	defer sw.mu.Unlock()
	k := denialKey{d.CallerService, d.Rule}
	dc := sw.denials[k]
	if dc == nil {
		if len(sw.denials) >= maxDenialKeys {
			return Refused
		}
		dc = &denialCount{}
		k = denialKey{strings.Clone(k.caller), strings.Clone(k.rule)} // the key outlives the batch
		sw.denials[k] = dc
	}
	dc.count += d.Count
	dc.lastSeen = now
	return Accepted
}

// maxUnitKeys bounds the unit-route counters kept per service.
const maxUnitKeys = 1000

// addUnitRoute counts requests of caller that a unit_routing rule of the
// callee decided.
func (s *Store) addUnitRoute(caller string, u *api.UnitRoute, now time.Time) Outcome {
	if u.CalleeService == "" || u.Count < 0 {
		return Invalid
	}
	sw := s.lockedService(u.CalleeService)
	defer sw.mu.Unlock()
	k := unitKey{caller, u.Rule, u.Unit, u.Outcome}
	uc := sw.units[k]
	if uc == nil {
		if len(sw.units) >= maxUnitKeys {
			return Refused
		}
		uc = &denialCount{}
		k = unitKey{strings.Clone(k.caller), strings.Clone(k.rule), strings.Clone(k.unit), strings.Clone(k.outcome)} // the key outlives the batch
		sw.units[k] = uc
	}
	uc.count += u.Count
	uc.lastSeen = now
	return Accepted
}

// slot returns the window of instance that holds tsMs, with sw locked,
// creating the series if need be; Accepted or why not.
func (s *Store) slot(sw *serviceWindows, instance string, tsMs int64, now time.Time) (*instanceWindows, *Window, Outcome) {
	if instance == "" || tsMs <= 0 {
		return nil, nil, Invalid
	}
	iw, ok := sw.instances[instance]
	if !ok {
		if !s.reserveSeries() {
			return nil, nil, Refused
		}
		iw = &instanceWindows{ring: make([]Window, s.count), firstSeen: now}
		sw.instances[strings.Clone(instance)] = iw // the name may point into a batch
	}
	iw.lastSeen = now
	index := tsMs / s.window.Milliseconds()
	if index <= iw.newest-int64(s.count) {
		iw.totals.LateRecords++
		return nil, nil, Late
	}
	if index > s.WindowIndex(now)+MaxAheadWindows {
		iw.totals.FutureRecords++
		return nil, nil, Future
	}
	iw.newest = max(iw.newest, index)
	// The slot holds this window or one at least count windows older.
	w := &iw.ring[index%int64(s.count)]
	if w.index != index {
		*w = Window{index: index, StartMs: index * s.window.Milliseconds()}
	}
	return iw, w, Accepted
}

// lockedService returns name's windows, created if need be, locked; never
// one that Expire or Drop just took out of the store.
func (s *Store) lockedService(name string) *serviceWindows {
	for {
		sw := s.service(name, true)
		sw.mu.Lock()
		if !sw.removed {
			return sw
		}
		sw.mu.Unlock()
	}
}

func (s *Store) service(name string, create bool) *serviceWindows {
	s.mu.RLock()
	sw := s.services[name]
	s.mu.RUnlock()
	if sw != nil || !create {
		return sw
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if sw = s.services[name]; sw == nil {
		sw = &serviceWindows{instances: map[string]*instanceWindows{}, denials: map[denialKey]*denialCount{}, units: map[unitKey]*denialCount{}}
		s.services[strings.Clone(name)] = sw // the name may point into a batch
	}
	return sw
}

// reserveSeries counts one more series if the limit allows. It takes no
// lock: add calls it holding a service's lock.
func (s *Store) reserveSeries() bool {
	for {
		n := s.series.Load()
		if n >= int64(s.maxSeries) {
			return false
		}
		if s.series.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// Series is how many (service, instance) series are tracked.
func (s *Store) Series() int { return int(s.series.Load()) }

// Expire forgets instances not reported since before cutoff, and services left
// with nothing; it returns how many series it removed.
func (s *Store) Expire(cutoff time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	removed := 0
	for name, sw := range s.services {
		sw.mu.Lock()
		for id, iw := range sw.instances {
			if iw.lastSeen.Before(cutoff) {
				delete(sw.instances, id)
				removed++
			}
		}
		if len(sw.instances) == 0 {
			delete(s.services, name)
			sw.removed = true
		}
		sw.mu.Unlock()
	}
	s.series.Add(-int64(removed))
	return removed
}

// EachCallerWindow calls f with each instance of service that its callers
// reported about in window index, and their sum (LatencyMsAvg filled in).
// f runs under the service's lock.
func (s *Store) EachCallerWindow(service string, index int64, f func(instance string, a CallerAgg)) {
	sw := s.service(service, false)
	if sw == nil {
		return
	}
	sw.mu.Lock()
	defer sw.mu.Unlock()
	for id, iw := range sw.instances {
		w := &iw.ring[index%int64(s.count)]
		if w.index != index || w.Callers.Records == 0 {
			continue
		}
		a := w.Callers
		if a.Requests > 0 {
			a.LatencyMsAvg = a.latencySum / float64(a.Requests)
		}
		f(id, a)
	}
}

// WindowIndex is the index of the window that holds t.
func (s *Store) WindowIndex(t time.Time) int64 { return t.UnixMilli() / s.window.Milliseconds() }

// LevelHistogram counts requests by admission level (api.Level).
type LevelHistogram [api.MaxLevel + 1]int64

// InstanceStats sums one instance's windows over a range of window indexes.
type InstanceStats struct {
	Instance  string
	Zone      string    // from the instance's own reports
	FirstSeen time.Time // when this store first heard of the instance
	LastSeen  time.Time // when it last did
	Windows   int       // windows in the range holding any data

	ServerWindows  int // windows with the instance's own report
	ServerRequests int64
	CPUUtil        float64 // mean over ServerWindows
	QueueTimeMsAvg float64 // weighted by requests
	ClientTimeouts int64

	CallRequests int64 // what callers reported about the instance
	CallErrors   int64
	CallTimeouts int64
	LatencyMsAvg float64 // weighted by requests
	LatencyMsP99 float64 // highest reported
}

// Stats appends to dst the stats of every instance of service over windows
// [from, to], sorted by instance; when byLevel is not nil, it also adds
// the instances' requests by priority (as they arrived) into it.
func (s *Store) Stats(dst []InstanceStats, service string, from, to int64, byLevel *LevelHistogram) []InstanceStats {
	sw := s.service(service, false)
	if sw == nil {
		return dst
	}
	sw.mu.Lock()
	defer sw.mu.Unlock()
	start := len(dst)
	for id, iw := range sw.instances {
		st := InstanceStats{Instance: id, Zone: iw.zone, FirstSeen: iw.firstSeen, LastSeen: iw.lastSeen}
		var cpuSum, queueSum, latSum float64
		for i := range iw.ring {
			w := &iw.ring[i]
			if w.index == 0 || w.index < from || w.index > to {
				continue
			}
			st.Windows++
			if w.Server.Records > 0 {
				st.ServerWindows++
				st.ServerRequests += w.Server.Requests
				cpuSum += w.Server.CPUUtil
				queueSum += w.Server.queueTimeSum
				st.ClientTimeouts += w.Server.ClientTimeouts
				if byLevel != nil {
					for l, n := range w.Server.RequestsByLevel {
						if l >= 0 && l <= api.MaxLevel {
							byLevel[l] += n
						}
					}
				}
			}
			st.CallRequests += w.Callers.Requests
			st.CallErrors += w.Callers.Errors
			st.CallTimeouts += w.Callers.Timeouts
			latSum += w.Callers.latencySum
			st.LatencyMsP99 = max(st.LatencyMsP99, w.Callers.LatencyMsP99)
		}
		if st.ServerWindows > 0 {
			st.CPUUtil = cpuSum / float64(st.ServerWindows)
		}
		if st.ServerRequests > 0 {
			st.QueueTimeMsAvg = queueSum / float64(st.ServerRequests)
		}
		if st.CallRequests > 0 {
			st.LatencyMsAvg = latSum / float64(st.CallRequests)
		}
		dst = append(dst, st)
	}
	slices.SortFunc(dst[start:], func(a, b InstanceStats) int { return strings.Compare(a.Instance, b.Instance) })
	return dst
}

// ZoneDemand sums, per caller zone, the requests sent to service in
// windows from..to (indexes, inclusive).
func (s *Store) ZoneDemand(service string, from, to int64) map[string]int64 {
	sw := s.service(service, false)
	if sw == nil {
		return nil
	}
	sw.mu.Lock()
	defer sw.mu.Unlock()
	var out map[string]int64
	for zone, zd := range sw.zones {
		var n int64
		for i, idx := range zd.index {
			if idx >= from && idx <= to {
				n += zd.requests[i]
			}
		}
		if n > 0 {
			if out == nil {
				out = map[string]int64{}
			}
			out[zone] = n
		}
	}
	return out
}

// Drop forgets everything about service (its shard no longer owns it, or
// owns it again and must start from clean windows).
func (s *Store) Drop(service string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sw := s.services[service]; sw != nil {
		sw.mu.Lock()
		s.series.Add(-int64(len(sw.instances)))
		sw.removed = true
		sw.mu.Unlock()
		delete(s.services, service)
	}
}

// Names lists the services held.
func (s *Store) Names() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.services))
	for name := range s.services {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// ServiceSummary is one line of the list of tracked services.
type ServiceSummary struct {
	Service   string `json:"service"`
	Instances int    `json:"instances"`
}

// Services lists the tracked services, sorted by name.
func (s *Store) Services() []ServiceSummary {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]ServiceSummary, 0, len(s.services))
	for name, sw := range s.services {
		sw.mu.Lock()
		out = append(out, ServiceSummary{Service: name, Instances: len(sw.instances)})
		sw.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b ServiceSummary) int { return strings.Compare(a.Service, b.Service) })
	return out
}

// InstanceView is one instance's windows, newest first, and totals.
type InstanceView struct {
	Instance     string   `json:"instance"`
	LastReportMs int64    `json:"last_report_ms"`
	Totals       Totals   `json:"totals"`
	Windows      []Window `json:"windows"`
}

// DenialView is a dry-run denial counter.
type DenialView struct {
	CallerService string `json:"caller_service"`
	Rule          string `json:"rule"`
	Count         int64  `json:"count"`
	LastSeenMs    int64  `json:"last_seen_ms"`
}

// UnitRouteView counts the requests of a caller that a unit_routing rule
// decided, by outcome.
type UnitRouteView struct {
	CallerService string `json:"caller_service"`
	Rule          string `json:"rule"`
	Unit          string `json:"unit"`
	Outcome       string `json:"outcome"`
	Count         int64  `json:"count"`
	LastSeenMs    int64  `json:"last_seen_ms"`
}

// CallerView is a service seen calling another, since the calculator
// first saw it (requests summed over the windows it accepted).
type CallerView struct {
	Service    string `json:"service"`
	Requests   int64  `json:"requests"`
	LastSeenMs int64  `json:"last_seen_ms"`
}

// ServiceView is everything kept about one service.
type ServiceView struct {
	Service       string          `json:"service"`
	Instances     []InstanceView  `json:"instances"`
	DryRunDenials []DenialView    `json:"dry_run_denials"`
	UnitRoutes    []UnitRouteView `json:"unit_routes"`
	Callers       []CallerView    `json:"callers"`
}

// Service returns a copy of what is kept about name, false when nothing is.
func (s *Store) Service(name string) (ServiceView, bool) {
	sw := s.service(name, false)
	if sw == nil {
		return ServiceView{}, false
	}
	sw.mu.Lock()
	defer sw.mu.Unlock()
	v := ServiceView{Service: name, Instances: []InstanceView{}, DryRunDenials: []DenialView{}, UnitRoutes: []UnitRouteView{}, Callers: []CallerView{}}
	for c, cc := range sw.callers {
		v.Callers = append(v.Callers, CallerView{Service: c, Requests: cc.requests, LastSeenMs: cc.lastSeen.UnixMilli()})
	}
	slices.SortFunc(v.Callers, func(a, b CallerView) int { return strings.Compare(a.Service, b.Service) })
	for id, iw := range sw.instances {
		iv := InstanceView{Instance: id, LastReportMs: iw.lastSeen.UnixMilli(), Totals: iw.totals, Windows: []Window{}}
		for _, w := range iw.ring {
			if w.index == 0 {
				continue
			}
			iv.Windows = append(iv.Windows, w.export())
		}
		slices.SortFunc(iv.Windows, func(a, b Window) int { return int(b.StartMs - a.StartMs) })
		v.Instances = append(v.Instances, iv)
	}
	slices.SortFunc(v.Instances, func(a, b InstanceView) int { return strings.Compare(a.Instance, b.Instance) })
	for k, dc := range sw.denials {
		v.DryRunDenials = append(v.DryRunDenials, DenialView{CallerService: k.caller, Rule: k.rule, Count: dc.count, LastSeenMs: dc.lastSeen.UnixMilli()})
	}
	slices.SortFunc(v.DryRunDenials, func(a, b DenialView) int {
		return strings.Compare(a.CallerService+"\x00"+a.Rule, b.CallerService+"\x00"+b.Rule)
	})
	for k, uc := range sw.units {
		v.UnitRoutes = append(v.UnitRoutes, UnitRouteView{CallerService: k.caller, Rule: k.rule, Unit: k.unit, Outcome: k.outcome, Count: uc.count, LastSeenMs: uc.lastSeen.UnixMilli()})
	}
	slices.SortFunc(v.UnitRoutes, func(a, b UnitRouteView) int {
		return strings.Compare(a.Rule+"\x00"+a.Unit+"\x00"+a.Outcome+"\x00"+a.CallerService, b.Rule+"\x00"+b.Unit+"\x00"+b.Outcome+"\x00"+b.CallerService)
	})
	return v, true
}

// export fills the derived fields and copies the maps.
func (w Window) export() Window {
	if w.Server.Requests > 0 {
		w.Server.QueueTimeMsAvg = w.Server.queueTimeSum / float64(w.Server.Requests)
	}
	if w.Callers.Requests > 0 {
		w.Callers.LatencyMsAvg = w.Callers.latencySum / float64(w.Callers.Requests)
	}
	w.Server.RequestsByPriority = maps.Clone(w.Server.RequestsByPriority)
	w.Server.RequestsByLevel = maps.Clone(w.Server.RequestsByLevel)
	return w
}

func finite(vs ...float64) bool {
	for _, v := range vs {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return false
		}
	}
	return true
}
