package api

// GET /v1/discovery/{service}?version=V&wait=30s on mesh-core is a long poll:
// it answers a Discovery at once when the service's version differs from V
// (or V is absent), else when it changes, else 304 with no body after wait.
// GET /v1/discovery?services=a,b&version=V is the same for several services
// at once and answers a DiscoveryBatch. docs/discovery.md has the details.

// Discovery is mesh-core's answer for one service: its instances with their
// dynamic weights and the service's admission decision.
type Discovery struct {
	Service string `json:"service"`
	// Version is a hash of the content, equal on every mesh-core replica that
	// holds the same state; compare versions for equality only.
	Version   int64      `json:"version"`
	Instances []Instance `json:"instances"`
	Overload  Overload   `json:"overload"`
	// PolicyAgeMs is how old the dynamic policy in use is; -1 when the
	// service runs on static weights.
	PolicyAgeMs int64 `json:"policy_age_ms"`
	// Stale is true while mesh-core cannot reach etcd and answers from the
	// last state it saw.
	Stale bool `json:"stale"`
	// ZoneRouting is the policy's zone-aware routing: for callers in each
	// zone, the share of their requests each zone gets
	// (docs/weights.md#zone-aware-routing).
	ZoneRouting map[string]map[string]float64 `json:"zone_routing,omitempty"`
}

// DiscoveryBatch is the answer of a poll for several services; Version is a
// hash of theirs.
type DiscoveryBatch struct {
	Version  int64       `json:"version"`
	Services []Discovery `json:"services"`
	Stale    bool        `json:"stale"`
}

// Instance is one instance of a service in a discovery answer.
type Instance struct {
	Instance string `json:"instance"`
	Addr     string `json:"addr"`
	Zone     string `json:"zone,omitempty"`
	Cluster  string `json:"cluster,omitempty"`
	// Weight is the dynamic weight (1..1000) when a policy covers the
	// instance, else its static weight; 0 only for an ejected instance.
	Weight       int32             `json:"weight"`
	StaticWeight int32             `json:"static_weight"`
	Healthy      bool              `json:"healthy"`
	Metadata     map[string]string `json:"metadata"`
	// Overload is this instance's own decision, when the policy has one.
	Overload *Overload `json:"overload,omitempty"`
	// Peer names the peer control plane this instance was imported from
	// (multi-cluster, docs/discovery.md); empty for an instance registered
	// with this cluster's own mesh-core. An imported instance is read-only
	// here, and its Cluster is never empty.
	Peer string `json:"peer,omitempty"`
}

// Overload states.
const (
	StateNormal     = "normal"
	StateOverloaded = "overloaded"
	StateRecovering = "recovering"
)

// Overload is an admission decision: drop requests whose admission level
// (Level(business, user)) is below AdmitMinLevel. AdmitMinPriority is its
// business priority; a decision that carries no level is read by it alone.
type Overload struct {
	State            string `json:"state"`
	AdmitMinPriority int32  `json:"admit_min_priority"`
	AdmitMinLevel    int32  `json:"admit_min_level"`
}

// Level is the admission level below which requests are shed; 0 for nil.
func (o *Overload) Level() int32 {
	if o == nil {
		return 0
	}
	return max(o.AdmitMinLevel, o.AdmitMinPriority*UserLevels)
}

// Validate checks a decision's state and ranges.
func (o *Overload) Validate() *FieldError {
	switch o.State {
	case StateNormal, StateOverloaded, StateRecovering:
	default:
		return Errorf("state", CodeInvalidValue, "state %q is not normal, overloaded or recovering", o.State)
	}
	if o.AdmitMinPriority < 0 || o.AdmitMinPriority > MaxPriority {
		return Errorf("admit_min_priority", CodeOutOfRange, "%d is outside [0, %d]", o.AdmitMinPriority, MaxPriority)
	}
	if o.AdmitMinLevel < 0 || o.AdmitMinLevel > MaxLevel {
		return Errorf("admit_min_level", CodeOutOfRange, "%d is outside [0, %d]", o.AdmitMinLevel, MaxLevel)
	}
	return nil
}
