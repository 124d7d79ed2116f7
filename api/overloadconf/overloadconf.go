// Package overloadconf is the document of the config-center's overload kind:
// a service's overload control, governed like its other config (validated,
// versioned, audited, rolled out). The weight-calculator reads the signal
// thresholds and steps from it; data planes read the keys their edge takes
// user and request ids from. Fields left out keep their defaults
// (docs/overload.md).
package overloadconf

import (
	"math"

	"github.com/sextant-mesh/sextant/api"
)

// Config is the document.
type Config struct {
	// Signals that mark the service or an instance overloaded.
	QueueTimeMs  *float64 `json:"queue_time_ms,omitempty"`
	CPU          *float64 `json:"cpu,omitempty"`
	TimeoutRatio *float64 `json:"timeout_ratio,omitempty"`
	// Share of the admitted load shed more per overloaded round; share of a
	// business priority (x 64 levels, at least one) admitted back per round.
	ShedStep    *float64 `json:"shed_step,omitempty"`
	RecoverStep *float64 `json:"recover_step,omitempty"`
	// Header or Kitex metainfo keys (lower case) the edge reads the user id
	// and, without one, the request id from, for the user priority.
	UserIDKey    string `json:"user_id_key,omitempty"`
	RequestIDKey string `json:"request_id_key,omitempty"`
}

// Parse decodes doc strictly and validates it; the error names the field.
func Parse(doc []byte) (*Config, *api.FieldError) {
	var c Config
	if fe := api.DecodeObject(doc, &c); fe != nil {
		return nil, fe
	}
	if fe := c.Validate(); fe != nil {
		return nil, fe
	}
	return &c, nil
}

// Validate names the first field out of its range.
func (c *Config) Validate() *api.FieldError {
	for _, r := range []struct {
		field    string
		v        *float64
		min, max float64
	}{
		{"queue_time_ms", c.QueueTimeMs, 0.1, 60_000},
		{"cpu", c.CPU, 0.05, 1},
		{"timeout_ratio", c.TimeoutRatio, 0, 1},
		{"shed_step", c.ShedStep, 0.001, 1},
		{"recover_step", c.RecoverStep, 0.001, 1},
	} {
		if r.v != nil && !(*r.v >= r.min && *r.v <= r.max) || r.v != nil && math.IsNaN(*r.v) {
			return api.Errorf(r.field, api.CodeOutOfRange, "%g is outside [%g, %g]", *r.v, r.min, r.max)
		}
	}
	for _, k := range []struct{ field, v string }{{"user_id_key", c.UserIDKey}, {"request_id_key", c.RequestIDKey}} {
		if k.v == "" {
			continue
		}
		if fe := api.Name(k.field, k.v, true); fe != nil {
			return fe
		}
		for _, b := range []byte(k.v) {
			if b >= 'A' && b <= 'Z' {
				return api.Errorf(k.field, api.CodeInvalidValue, "%q: keys are lower case", k.v)
			}
		}
	}
	return nil
}
