package core

import (
	"net"
	"strconv"

	"github.com/sextant-mesh/sextant/internal/jsonx"
)

// Registration is an instance as registered (DESIGN.md), and as stored in
// etcd at registry/{service}/{instance} under its lease.
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
func (r *Registration) Validate(defaultTTL int64) *jsonx.FieldError {
	if fe := keyName("service", r.Service); fe != nil {
		return fe
	}
	if fe := keyName("instance", r.Instance); fe != nil {
		return fe
	}
	if r.Addr == "" {
		r.Addr = r.Instance
	}
	if _, port, err := net.SplitHostPort(r.Addr); err != nil {
		return jsonx.Errorf("addr", jsonx.CodeInvalidValue, "want host:port, got %q", r.Addr)
	} else if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return jsonx.Errorf("addr", jsonx.CodeInvalidValue, "port %q is not in 1..65535", port)
	}
	if fe := jsonx.Name("zone", r.Zone, false); fe != nil {
		return fe
	}
	if fe := jsonx.Name("cluster", r.Cluster, false); fe != nil {
		return fe
	}
	if r.StaticWeight == 0 {
		r.StaticWeight = DefaultStaticWeight
	}
	if r.StaticWeight < 1 || r.StaticWeight > 1000 {
		return jsonx.Errorf("static_weight", jsonx.CodeOutOfRange, "%d is outside [1, 1000]", r.StaticWeight)
	}
	if len(r.Metadata) > MaxMetadataEntries {
		return jsonx.Errorf("metadata", jsonx.CodeTooMany, "%d entries, at most %d", len(r.Metadata), MaxMetadataEntries)
	}
	for k, v := range r.Metadata {
		if fe := jsonx.Name(jsonx.Join("metadata", k), k, true); fe != nil {
			return fe
		}
		if len(v) > MaxMetadataValueLen {
			return jsonx.Errorf(jsonx.Join("metadata", k), jsonx.CodeOutOfRange, "value is %d bytes, at most %d", len(v), MaxMetadataValueLen)
		}
	}
	if r.TTLSeconds == 0 {
		r.TTLSeconds = defaultTTL
	}
	if r.TTLSeconds < MinTTLSeconds || r.TTLSeconds > MaxTTLSeconds {
		return jsonx.Errorf("ttl_s", jsonx.CodeOutOfRange, "%d is outside [%d, %d]", r.TTLSeconds, MinTTLSeconds, MaxTTLSeconds)
	}
	return nil
}

// keyName is a name that becomes part of an etcd key: no '/'.
func keyName(field, v string) *jsonx.FieldError {
	if fe := jsonx.Name(field, v, true); fe != nil {
		return fe
	}
	for _, c := range v {
		if c == '/' {
			return jsonx.Errorf(field, jsonx.CodeInvalidValue, "%q may not contain '/'", v)
		}
	}
	return nil
}
