package api

// Policy is a service's dynamic policy as mesh-core stores it in etcd (at
// Keys.Policy) and the config-center hands it to SDKs (WatchAnswer.Policies):
// the weight-calculator's weights and admission decisions. The calculator
// publishes it over Kitex (idl/meshcore.thrift); mesh-core converts it to
// this type before storing, so the stored schema does not follow the IDL.
type Policy struct {
	Service string `json:"service"`
	// Version grows with every publication; mesh-core refuses older ones.
	Version int64            `json:"version"`
	Weights []InstanceWeight `json:"weights"`
	// Overload is the service's decision.
	Overload *Overload `json:"overload"`
	// InstanceOverload are the decisions of single instances, by instance.
	InstanceOverload map[string]*Overload `json:"instance_overload"`
	ComputedAtMs     int64                `json:"computed_at_ms"`
	CalculatorID     string               `json:"calculator_id"`
	// ZoneRouting is zone-aware routing: for callers in each zone (the key),
	// the share of their requests each zone of the service gets
	// (docs/weights.md#zone-aware-routing); empty when off, or when no
	// caller reported its zone.
	ZoneRouting map[string]map[string]float64 `json:"zone_routing,omitempty"`
}

// MaxZones bounds the zones a policy's ZoneRouting names.
const MaxZones = 64

// InstanceWeight is one instance's dynamic weight: 1..1000, or 0 with
// Ejected set, Reason saying why.
type InstanceWeight struct {
	Instance string `json:"instance"`
	Weight   int32  `json:"weight"`
	Ejected  bool   `json:"ejected"`
	Reason   string `json:"reason"`
	// EjectedUntilMs is when an ejected instance comes back (unix ms); a
	// calculator that takes the service over keeps the ejection until then.
	EjectedUntilMs int64 `json:"ejected_until_ms,omitempty"`
	// Ejections is the ejections in a row the ejection backoff counts.
	Ejections int32 `json:"ejections,omitempty"`
}

// Shard is one weight-calculator shard as it registers itself in etcd (at
// Keys.Shard, under its lease); the mixer and the config-center read the
// live set to route by service.
type Shard struct {
	ID string `json:"id"`
	// Addr is the Kitex address that serves Aggregator.Ingest.
	Addr string `json:"addr"`
	// AdminAddr is the admin HTTP address (/debug, /metrics).
	AdminAddr string `json:"admin_addr,omitempty"`
}
