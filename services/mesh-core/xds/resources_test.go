package xds

import (
	"encoding/json"
	"testing"

	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/sextant-mesh/sextant/api"
)

// validatable is what every generated xDS proto has: the constraints of
// Envoy's protos (protoc-gen-validate), checked in full.
type validatable interface{ ValidateAll() error }

func validate(t *testing.T, what string, r types.Resource) {
	t.Helper()
	v, ok := r.(validatable)
	if !ok {
		t.Fatalf("%s: %T has no ValidateAll", what, r)
	}
	if err := v.ValidateAll(); err != nil {
		t.Errorf("%s is not valid: %v", what, err)
	}
}

func governance(t *testing.T) *Governance {
	t.Helper()
	g := &Governance{}
	g.Decode(api.KindRPCTimeout, json.RawMessage(`{"*": {"rpc_timeout_ms": 800, "conn_timeout_ms": 50}, "Slow": {"rpc_timeout_ms": 3000}}`))
	g.Decode(api.KindRetry, json.RawMessage(`{"*": {"enable": true, "type": 0, "failure_policy": {"stop_policy": {"max_retry_times": 2},
		"backoff_policy": {"backoff_type": "random", "cfg_items": {"min_ms": 10, "max_ms": 50}}}},
		"Fixed": {"enable": true, "type": 0, "failure_policy": {"stop_policy": {"max_retry_times": 1}, "backoff_policy": {"backoff_type": "fixed", "cfg_items": {"fix_ms": 20}}}},
		"Backup": {"enable": true, "type": 1, "backup_policy": {"retry_delay_ms": 30, "stop_policy": {"max_retry_times": 1}}}}`))
	g.Decode(api.KindCircuitBreak, json.RawMessage(`{"Get": {"enable": true, "err_rate": 0.3, "min_sample": 100}}`))
	if g.empty() {
		t.Fatal("governance decoded empty")
	}
	return g
}

// Every resource the server produces, with and without governance, with
// drops and localities, passes Envoy's validation.
func TestResourcesAreValid(t *testing.T) {
	members := []api.Instance{
		{Instance: "a", Addr: "10.0.0.1:9000", Zone: "z1", Cluster: "c1", Weight: 100, Healthy: true},
		{Instance: "b", Addr: "10.0.0.2:9000", Zone: "z1", Cluster: "c1", Weight: 1000, Healthy: true},
		{Instance: "c", Addr: "[::1]:9000", Zone: "z2", Weight: 1, Healthy: true},
		{Instance: "d", Addr: "10.0.0.4:9000", Weight: 0, Healthy: false},
		{Instance: "e", Addr: "not-an-address", Weight: 5, Healthy: true},
	}
	for _, fault := range []bool{false, true} {
		l, err := Listener("svc", fault)
		if err != nil {
			t.Fatal(err)
		}
		validate(t, "listener", l)
	}
	g := governance(t)
	for _, shed := range []*Shed{{Level: 64*64 + 10, DefaultPriority: 64}, {Level: 64 * 20, DefaultPriority: 64}, {Level: 5, DefaultPriority: 0}} {
		for _, gov := range []*Governance{nil, g} {
			validate(t, "routes shedding by priority", RouteConfiguration("svc", gov, shed))
		}
	}
	for _, gov := range []*Governance{nil, g} {
		rc := RouteConfiguration("svc", gov, nil)
		validate(t, "routes", rc)
		validate(t, "cluster", Cluster("svc", gov))
		if gov != nil {
			if n := len(rc.VirtualHosts[0].Routes); n != 4 { // Backup, Fixed, Slow, default
				t.Errorf("%d routes, want 4", n)
			}
			def := rc.VirtualHosts[0].Routes[3].GetRoute()
			if def.GetTimeout().AsDuration().Milliseconds() != 800 || def.GetMaxStreamDuration().GetMaxStreamDuration().AsDuration().Milliseconds() != 800 {
				t.Errorf("default route timeout %v", def.GetTimeout())
			}
			if def.GetRetryPolicy().GetNumRetries().GetValue() != 2 {
				t.Errorf("default route retries %v", def.GetRetryPolicy())
			}
			if rc.VirtualHosts[0].Routes[0].GetRoute().GetRetryPolicy() != nil {
				t.Error("a backup request became a retry policy")
			}
			if od := Cluster("svc", gov).GetOutlierDetection(); od.GetFailurePercentageThreshold().GetValue() != 30 || od.GetFailurePercentageRequestVolume().GetValue() != 100 {
				t.Errorf("outlier detection %v", od)
			}
		}
	}
	for _, level := range []int32{0, 64*64 + 1, 64*64 + 32, 64*64 + 63, 65 * 64, 8191} {
		cla := LoadAssignment("svc", members, &api.Overload{State: api.StateOverloaded, AdmitMinLevel: level}, DefaultPriority)
		validate(t, "endpoints", cla)
		if n := len(cla.Endpoints); n != 2 {
			t.Fatalf("%d localities, want 2 (z1/c1, z2)", n)
		}
		if w := cla.Endpoints[0].LoadBalancingWeight.GetValue(); w != 1100 {
			t.Errorf("locality z1/c1 weight %d, want 1100", w)
		}
	}
}

// The drop share of a level, and its encoding that grpc-go reads without
// overflow.
func TestDrops(t *testing.T) {
	for _, c := range []struct {
		level int32
		ppm   uint32
	}{{0, 0}, {64 * 63, 0}, {64 * 64, 0}, {64*64 + 1, 15_625}, {64*64 + 32, 500_000}, {64*64 + 63, 984_375}, {65 * 64, 1_000_000}} {
		if got := DropPerMillion(&api.Overload{State: api.StateOverloaded, AdmitMinLevel: c.level}, DefaultPriority); got != c.ppm {
			t.Errorf("level %d: %d per million, want %d", c.level, got, c.ppm)
		}
	}
	if got := DropPerMillion(&api.Overload{State: api.StateOverloaded, AdmitMinLevel: 20*64 + 10}, 20); got != 156_250 {
		t.Errorf("default priority 20: %d per million", got)
	}
	for _, ppm := range []uint32{1, 4294, 4295, 15_625, 429_400, 500_000, 1_000_000} {
		f := dropFraction(ppm)
		den := map[typev3.FractionalPercent_DenominatorType]uint64{typev3.FractionalPercent_HUNDRED: 100,
			typev3.FractionalPercent_TEN_THOUSAND: 10_000, typev3.FractionalPercent_MILLION: 1_000_000}[f.Denominator]
		if uint64(f.Numerator)*1_000_000 > 1<<32-1 {
			t.Errorf("%d ppm: numerator %d overflows grpc-go's arithmetic", ppm, f.Numerator)
		}
		got := uint64(f.Numerator) * 1_000_000 / den
		if d := int64(got) - int64(ppm); d > 5_000 || d < -5_000 {
			t.Errorf("%d ppm encoded as %d/%d", ppm, f.Numerator, den)
		}
	}
}
