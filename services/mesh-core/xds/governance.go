package xds

import (
	"encoding/json"
	"slices"
	"time"

	"github.com/cloudwego/kitex/pkg/circuitbreak"
	"github.com/cloudwego/kitex/pkg/retry"
	"github.com/cloudwego/kitex/pkg/rpctimeout"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Governance is what one caller applies when it calls one server: the
// documents of the client-scoped kinds the config-center stores at
// config/{server}/{kind}/{caller}, decoded into the types Kitex and the
// config-center read them into. A nil *Governance is none.
type Governance struct {
	Timeouts map[string]*rpctimeout.RPCTimeout
	Retries  map[string]*retry.Policy
	Breakers map[string]*circuitbreak.CBConfig
}

// Decode sets g's field of kind from doc (a document the config-center has
// validated); an unknown kind or an undecodable document is left out.
func (g *Governance) Decode(kind string, doc json.RawMessage) {
	switch kind {
	case "rpc_timeout":
		_ = json.Unmarshal(doc, &g.Timeouts)
	case "retry":
		_ = json.Unmarshal(doc, &g.Retries)
	case "circuit_break":
		_ = json.Unmarshal(doc, &g.Breakers)
	}
}

// empty tells whether g changes nothing of the defaults.
func (g *Governance) empty() bool {
	return g == nil || len(g.Timeouts) == 0 && len(g.Retries) == 0 && len(g.Breakers) == 0
}

// methods are the methods named (other than "*") in the timeout and retry
// documents, sorted: each gets a route of its own.
func (g *Governance) methods() []string {
	if g == nil {
		return nil
	}
	var out []string
	for m := range g.Timeouts {
		out = append(out, m)
	}
	for m := range g.Retries {
		out = append(out, m)
	}
	slices.Sort(out)
	out = slices.Compact(out)
	return slices.DeleteFunc(out, func(m string) bool { return m == "*" || m == "" })
}

// entry is method's entry of a per-method document, else its "*".
func entry[T any](m map[string]*T, method string) *T {
	if v := m[method]; v != nil {
		return v
	}
	return m["*"]
}

// timeout is method's rpc_timeout, if one is set.
func (g *Governance) timeout(method string) (time.Duration, bool) {
	if g == nil {
		return 0, false
	}
	t := entry(g.Timeouts, method)
	if t == nil || t.RPCTimeoutMS <= 0 {
		return 0, false
	}
	return time.Duration(t.RPCTimeoutMS) * time.Millisecond, true
}

// connectTimeout is the "*" conn_timeout_ms, nil for the data plane's default.
func (g *Governance) connectTimeout() *durationpb.Duration {
	if g == nil {
		return nil
	}
	if t := g.Timeouts["*"]; t != nil && t.ConnTimeoutMS > 0 {
		return durationpb.New(time.Duration(t.ConnTimeoutMS) * time.Millisecond)
	}
	return nil
}

// retryOn are the conditions a failure retry retries on: gRPC status codes
// (read by gRPC and Envoy) and connection failures (read by Envoy). Kitex's
// failure retry retries on errors and timeouts; RESOURCE_EXHAUSTED, the
// status of a request shed under overload, is not retried.
const retryOn = "cancelled,deadline-exceeded,internal,unavailable,connect-failure,reset"

// retryPolicy is method's failure retry as a route retry policy; nil when
// none is enabled. A backup request has no xDS counterpart and is left out.
func (g *Governance) retryPolicy(method string) *routev3.RetryPolicy {
	if g == nil {
		return nil
	}
	p := entry(g.Retries, method)
	if p == nil || !p.Enable || p.Type != retry.FailureType || p.FailurePolicy == nil || p.FailurePolicy.StopPolicy.MaxRetryTimes <= 0 {
		return nil
	}
	fp := p.FailurePolicy
	rp := &routev3.RetryPolicy{RetryOn: retryOn, NumRetries: wrapperspb.UInt32(uint32(fp.StopPolicy.MaxRetryTimes))}
	if b := fp.BackOffPolicy; b != nil {
		ms := func(k retry.BackOffCfgKey) *durationpb.Duration {
			if v := b.CfgItems[k]; v > 0 {
				return durationpb.New(time.Duration(v * float64(time.Millisecond)))
			}
			return nil
		}
		switch b.BackOffType {
		case retry.FixedBackOffType:
			if d := ms(retry.FixMSBackOffCfgKey); d != nil {
				rp.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: d, MaxInterval: d}
			}
		case retry.RandomBackOffType:
			if lo, hi := ms(retry.MinMSBackOffCfgKey), ms(retry.MaxMSBackOffCfgKey); lo != nil && hi != nil && hi.AsDuration() >= lo.AsDuration() {
				rp.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: lo, MaxInterval: hi}
			}
		}
	}
	return rp
}

// outlierDetection is the circuit_break document as outlier detection:
// Kitex breaks a method's circuit to an instance when its error rate
// passes err_rate over at least min_sample calls in a 10 s window; xDS ejects
// a host when its failure percentage does, over at least request_volume
// calls per 10 s interval. xDS has no per-method breaker: the "*" entry is
// used, else the most sensitive enabled one.
func (g *Governance) outlierDetection() *clusterv3.OutlierDetection {
	if g == nil {
		return nil
	}
	cb := g.Breakers["*"]
	if cb == nil || !cb.Enable {
		cb = nil
		for _, c := range g.Breakers {
			if c != nil && c.Enable && (cb == nil || c.ErrRate < cb.ErrRate) {
				cb = c
			}
		}
	}
	if cb == nil || !cb.Enable || cb.ErrRate <= 0 {
		return nil
	}
	pct := uint32(min(100, max(1, cb.ErrRate*100)))
	volume := uint32(max(1, cb.MinSample))
	return &clusterv3.OutlierDetection{
		Interval:                       durationpb.New(10 * time.Second),
		BaseEjectionTime:               durationpb.New(30 * time.Second),
		MaxEjectionPercent:             wrapperspb.UInt32(50),
		FailurePercentageThreshold:     wrapperspb.UInt32(pct),
		FailurePercentageRequestVolume: wrapperspb.UInt32(volume),
		FailurePercentageMinimumHosts:  wrapperspb.UInt32(1),
		EnforcingFailurePercentage:     wrapperspb.UInt32(100),
		// Only the failure percentage: the other detectors stay off.
		EnforcingSuccessRate:               wrapperspb.UInt32(0),
		EnforcingConsecutive_5Xx:           wrapperspb.UInt32(0),
		EnforcingConsecutiveGatewayFailure: wrapperspb.UInt32(0),
	}
}
