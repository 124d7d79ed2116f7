package api

// ServiceOverview is one service as the weight-calculator's last round saw it:
// a line of the operators' overview (GET /v1/services on the config-center,
// which merges what every calculator shard answers).
type ServiceOverview struct {
	Service   string `json:"service"`
	Shard     string `json:"shard"`
	RoundAtMs int64  `json:"round_at_ms"`
	Instances int    `json:"instances"`
	Ejected   int    `json:"ejected"`
	// The lowest and highest weight of the instances not ejected.
	WeightMin    int32   `json:"weight_min"`
	WeightMax    int32   `json:"weight_max"`
	RequestsPerS float64 `json:"requests_per_s"`
	// Failed calls over calls, and the mean latency the callers saw,
	// weighted by each instance's requests.
	ErrorRatio float64         `json:"error_ratio"`
	LatencyMs  float64         `json:"latency_ms"`
	Overload   OverloadSummary `json:"overload"`
}

// OverloadSummary is a service's overload state and the signals behind it.
type OverloadSummary struct {
	State            string  `json:"state"`
	AdmitMinPriority int32   `json:"admit_min_priority"`
	AdmitMinLevel    int32   `json:"admit_min_level"`
	ShedTarget       float64 `json:"shed_target"`
	QueueTimeMs      float64 `json:"queue_time_ms"`
	CPU              float64 `json:"cpu"`
	TimeoutRatio     float64 `json:"timeout_ratio"`
	Reason           string  `json:"reason,omitempty"`
}

// ServiceInstances is a service's instances as the last round weighed them.
type ServiceInstances struct {
	ServiceOverview
	Instances []InstanceOverview `json:"instances"`
}

// InstanceOverview is one instance's weight, why, and the figures it was
// computed from; Share is its part of the service's requests.
type InstanceOverview struct {
	Instance    string  `json:"instance"`
	Weight      int32   `json:"weight"`
	Ejected     bool    `json:"ejected"`
	Reason      string  `json:"reason"`
	QPS         float64 `json:"qps"`
	Share       float64 `json:"share"`
	Utilization float64 `json:"utilization"`
	ErrorRate   float64 `json:"error_rate"`
	LatencyMs   float64 `json:"latency_ms"`
}
