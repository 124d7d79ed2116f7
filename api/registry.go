package api

import (
	"net"
	"strconv"
)

// Registration is an instance as a data plane registers it with mesh-core
// (POST /v1/instances, 201; PUT /v1/instances/{service}/{instance}/heartbeat
// renews its lease, 404 when mesh-core lost it; DELETE deregisters, 204), and
// as stored in etcd at Keys.Instance under its lease.
type Registration struct {
	Service      string            `json:"service"`
	Instance     string            `json:"instance"`
	Addr         string            `json:"addr"`
	Zone         string            `json:"zone,omitempty"`
	Cluster      string            `json:"cluster,omitempty"`
	StaticWeight int32             `json:"static_weight,omitempty"`
	Metadata     map[string]string `json:"metadata,omitempty"`
	TTLSeconds   int64             `json:"ttl_s,omitempty"`
}

// Registration bounds.
const (
	DefaultStaticWeight = 100
	MinTTLSeconds       = 5
	MaxTTLSeconds       = 3600
	MaxMetadataEntries  = 64
	MaxMetadataValueLen = 1024
)

// Validate fills defaults and names the first bad field.
func (r *Registration) Validate(defaultTTL int64) *FieldError {
	if fe := KeyName("service", r.Service); fe != nil {
		return fe
	}
	if fe := KeyName("instance", r.Instance); fe != nil {
		return fe
	}
	if r.Addr == "" {
		r.Addr = r.Instance
	}
	if _, port, err := net.SplitHostPort(r.Addr); err != nil {
		return Errorf("addr", CodeInvalidValue, "want host:port, got %q", r.Addr)
	} else if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return Errorf("addr", CodeInvalidValue, "port %q is not in 1..65535", port)
	}
	if fe := Name("zone", r.Zone, false); fe != nil {
		return fe
	}
	if fe := Name("cluster", r.Cluster, false); fe != nil {
		return fe
	}
	if r.StaticWeight == 0 {
		r.StaticWeight = DefaultStaticWeight
	}
	if r.StaticWeight < 1 || r.StaticWeight > 1000 {
		return Errorf("static_weight", CodeOutOfRange, "%d is outside [1, 1000]", r.StaticWeight)
	}
	if len(r.Metadata) > MaxMetadataEntries {
		return Errorf("metadata", CodeTooMany, "%d entries, at most %d", len(r.Metadata), MaxMetadataEntries)
	}
	for k, v := range r.Metadata {
		if fe := Name(Join("metadata", k), k, true); fe != nil {
			return fe
		}
		if len(v) > MaxMetadataValueLen {
			return Errorf(Join("metadata", k), CodeOutOfRange, "value is %d bytes, at most %d", len(v), MaxMetadataValueLen)
		}
	}
	if r.TTLSeconds == 0 {
		r.TTLSeconds = defaultTTL
	}
	if r.TTLSeconds < MinTTLSeconds || r.TTLSeconds > MaxTTLSeconds {
		return Errorf("ttl_s", CodeOutOfRange, "%d is outside [%d, %d]", r.TTLSeconds, MinTTLSeconds, MaxTTLSeconds)
	}
	return nil
}
