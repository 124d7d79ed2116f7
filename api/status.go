package api

// DataPlaneConfig is one instance watching its configs, and whether it runs
// the current ones (the config-center's GET /v1/dataplanes): SYNCED when it
// reported applying the revisions in force for it, STALE when it was sent
// them and has not reported applying them, NOT SENT when the configs
// changed after its last answer (it is between polls, or gone).
type DataPlaneConfig struct {
	Service  string `json:"service"`
	Instance string `json:"instance"`
	State    string `json:"state"`
	// Revisions by "kind/scope": in force now, sent last, applied last.
	Current    map[string]int64 `json:"current"`
	Sent       map[string]int64 `json:"sent"`
	Applied    map[string]int64 `json:"applied"`
	LastSeenMs int64            `json:"last_seen_ms"`
}

// DataPlaneDiscovery is one data plane's discovery poll, as mesh-core's
// GET /v1/dataplanes answers it: the services it follows together, the
// version it holds and the one in force, SYNCED or STALE.
type DataPlaneDiscovery struct {
	Client     string   `json:"client"`
	Services   []string `json:"services"`
	Held       int64    `json:"held"`
	Current    int64    `json:"current"`
	State      string   `json:"state"`
	LastSeenMs int64    `json:"last_seen_ms"`
}

// Data-plane states.
const (
	StateSynced  = "SYNCED"
	StateStale   = "STALE"
	StateNotSent = "NOT SENT"
)
