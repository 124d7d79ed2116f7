package core

import (
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/bytedance/sonic"

	"github.com/sextant-mesh/sextant/api"
)

// Snapshot is what data planes get for one service: its instances merged
// with their dynamic weights, and the overload decision. It is immutable and
// internally consistent: every weight comes from one policy, or none. Its
// body is encoded once and shared by every poller.
//
// Version is a hash of the content, so every mesh-core replica holding the
// same state answers the same version. Compare versions for equality only.
type Snapshot struct {
	Service   string
	Version   int64
	Instances int
	// computed_at of the policy in use; 0 when the service runs on static weights.
	PolicyAtMs int64
	// body is the JSON answer without its closing brace: the per-request
	// fields (policy_age_ms, stale) are appended to it.
	body []byte
	// localVersion and localBody are the answer with the local instances
	// only, without those imported from peers: what this cluster exports
	// (peering.go). The same as Version and body when nothing is imported.
	localVersion int64
	localBody    []byte
	// done is closed when a snapshot with another version replaces this one.
	done chan struct{}
	// built is when this version was made, to measure how long pollers wait for it.
	built time.Time
	// members and decision are what body encodes, kept for the xDS
	// translation, which reads them rather than deriving them again.
	members  []api.Instance
	decision *api.Overload
}

var canonical = sonic.Config{SortMapKeys: true}.Froze()

// normalOverload is the decision of a service without a policy.
var normalOverload = &api.Overload{State: api.StateNormal}

// buildSnapshot merges a service's registrations with its policy (nil when
// none applies). An instance the policy leaves out gets the median of the
// policy's weights: a neutral share, not a static weight on another scale.
// imported are the instances of the service imported from peer control
// planes (peering.go), appended after the local ones as they came, with
// their peer's weights, unless the local policy weighs one (this cluster's
// callers' view of it: its weight and ejection apply); one whose name a
// local instance has is left out.
func buildSnapshot(service string, regs map[string]api.Registration, pol *api.Policy, imported ...api.Instance) *Snapshot {
	dynamic := map[string]api.InstanceWeight{}
	neutral := int32(0)
	if pol != nil && len(pol.Weights) > 0 {
		ws := make([]int32, 0, len(pol.Weights))
		for _, w := range pol.Weights {
			dynamic[w.Instance] = w
			if !w.Ejected {
				ws = append(ws, w.Weight)
			}
		}
		slices.Sort(ws)
		if len(ws) > 0 {
			neutral = ws[len(ws)/2]
		}
	}
	ids := make([]string, 0, len(regs))
	for id := range regs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	instances := make([]api.Instance, 0, len(ids)+len(imported))
	for _, id := range ids {
		r := regs[id]
		in := api.Instance{Instance: id, Addr: r.Addr, Zone: r.Zone, Cluster: r.Cluster,
			Weight: r.StaticWeight, StaticWeight: r.StaticWeight, Healthy: true, Metadata: r.Metadata}
		if in.Metadata == nil {
			in.Metadata = map[string]string{}
		}
		if pol != nil && len(pol.Weights) > 0 {
			if w, ok := dynamic[id]; ok {
				in.Weight, in.Healthy = w.Weight, !w.Ejected
			} else if neutral > 0 {
				in.Weight = neutral
			}
			in.Overload = pol.InstanceOverload[id]
		}
		instances = append(instances, in)
	}
	overload := normalOverload
	if pol != nil && pol.Overload != nil {
		overload = pol.Overload
	}
	var zones map[string]map[string]float64
	if pol != nil {
		zones = pol.ZoneRouting
	}
	local := len(instances)
	version, body := encodeSnapshot(service, instances, overload, zones)
	s := &Snapshot{Service: service, Version: version, Instances: local, body: body,
		localVersion: version, localBody: body, done: make(chan struct{}), built: time.Now()}
	if len(imported) > 0 {
		for _, in := range imported {
			if _, ok := regs[in.Instance]; ok {
				continue
			}
			if w, ok := dynamic[in.Instance]; ok {
				in.Weight, in.Healthy = w.Weight, !w.Ejected
				if o := pol.InstanceOverload[in.Instance]; o != nil {
					in.Overload = o
				}
			}
			instances = append(instances, in)
		}
		s.Version, s.body = encodeSnapshot(service, instances, overload, zones)
		s.Instances = len(instances)
	}
	s.members, s.decision = instances, overload
	if pol != nil {
		s.PolicyAtMs = pol.ComputedAtMs
	}
	return s
}

// Members are the service's instances as the snapshot gives them (weights
// merged, ejected ones unhealthy; the imported ones after the local ones).
// Callers must not modify them.
func (s *Snapshot) Members() []api.Instance { return s.members }

// Decision is the service's overload decision (state normal without a policy).
func (s *Snapshot) Decision() *api.Overload { return s.decision }

// encodeSnapshot is the shared body of an answer and its version; zones is
// the policy's zone routing (nil: none).
func encodeSnapshot(service string, instances []api.Instance, overload *api.Overload, zones map[string]map[string]float64) (int64, []byte) {
	instJSON, _ := canonical.Marshal(instances)
	overloadJSON, _ := canonical.Marshal(overload)
	serviceJSON, _ := canonical.Marshal(service)
	var zonesJSON []byte
	if len(zones) > 0 {
		zonesJSON, _ = canonical.Marshal(zones)
	}

	h := fnv.New64a()
	h.Write(serviceJSON)
	h.Write(instJSON)
	h.Write(overloadJSON)
	h.Write(zonesJSON)
	version := int64(h.Sum64() & (1<<53 - 1)) // exact in every JSON parser
	if version == 0 {
		version = 1
	}
	var b strings.Builder
	b.Grow(len(instJSON) + len(overloadJSON) + len(serviceJSON) + len(zonesJSON) + 80)
	b.WriteString(`{"service":`)
	b.Write(serviceJSON)
	b.WriteString(`,"version":`)
	b.WriteString(strconv.FormatInt(version, 10))
	b.WriteString(`,"instances":`)
	b.Write(instJSON)
	b.WriteString(`,"overload":`)
	b.Write(overloadJSON)
	if zonesJSON != nil {
		b.WriteString(`,"zone_routing":`)
		b.Write(zonesJSON)
	}
	return version, []byte(b.String())
}

// Changed is closed when this snapshot is replaced by another version.
func (s *Snapshot) Changed() <-chan struct{} { return s.done }

// AppendJSON appends the full answer: the shared body plus the age of the
// policy in use (-1 without one) and whether etcd is out of reach.
func (s *Snapshot) AppendJSON(dst []byte, now time.Time, stale bool) []byte {
	return s.appendJSON(dst, s.body, now, stale)
}

func (s *Snapshot) appendJSON(dst, body []byte, now time.Time, stale bool) []byte {
	dst = append(dst, body...)
	dst = append(dst, `,"policy_age_ms":`...)
	if s.PolicyAtMs > 0 {
		dst = strconv.AppendInt(dst, max(0, now.UnixMilli()-s.PolicyAtMs), 10)
	} else {
		dst = append(dst, "-1"...)
	}
	dst = append(dst, `,"stale":`...)
	dst = strconv.AppendBool(dst, stale)
	return append(dst, '}')
}
