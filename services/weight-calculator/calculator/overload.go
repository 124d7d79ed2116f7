package calculator

// Overload states (docs/overload.md).
const (
	StateNormal     = "normal"
	StateOverloaded = "overloaded"
	StateRecovering = "recovering"
)

// overloadControl is the admission state of a service or an instance, after
// WeChat's DAGOR: while overloaded, the share of load to shed grows by
// ShedStep per round; while healthy again, it shrinks by RecoverStep per
// round. The threshold is the lowest priority that sheds at least that share
// of the load, measured from requests by priority as they arrive, and never
// sheds the highest priority present.
type overloadControl struct {
	State            string  `json:"state"`
	AdmitMinPriority int32   `json:"admit_min_priority"`
	ShedTarget       float64 `json:"shed_target"`
	// The signals of the last round, for /debug/policy.
	QueueTimeMs  float64 `json:"queue_time_ms"`
	CPU          float64 `json:"cpu"`
	TimeoutRatio float64 `json:"timeout_ratio"`
	Reason       string  `json:"reason,omitempty"`
}

// overloadSignals is what one round knows of the load.
type overloadSignals struct {
	queueTimeMs  float64
	cpu          float64
	timeoutRatio float64
	byPriority   *[128]int64 // arrivals by priority in the round's window
}

// overloaded tells whether the signals pass a threshold, and which.
func (s overloadSignals) overloaded(k *Knobs) (bool, string) {
	switch {
	case s.queueTimeMs > k.OverloadQueueTimeMs:
		return true, "queue_time"
	case s.cpu > k.OverloadCPU:
		return true, "cpu"
	case s.timeoutRatio > k.OverloadTimeoutRatio:
		return true, "client_timeouts"
	}
	return false, ""
}

// step advances the control by one round.
func (c *overloadControl) step(sig overloadSignals, k *Knobs) {
	if c.State == "" {
		c.State = StateNormal
	}
	c.QueueTimeMs, c.CPU, c.TimeoutRatio = sig.queueTimeMs, sig.cpu, sig.timeoutRatio
	over, why := sig.overloaded(k)
	c.Reason = why
	hist := sig.byPriority
	total := int64(0)
	for _, n := range hist {
		total += n
	}
	if total == 0 {
		// Nothing arrived: nothing to measure shares with. Keep the threshold
		// while overloaded; otherwise keep recovering by the clock.
		if !over && c.State != StateNormal {
			c.ShedTarget = max(0, c.ShedTarget-k.RecoverStep)
			if c.ShedTarget == 0 {
				c.State, c.AdmitMinPriority = StateNormal, 0
			}
		}
		return
	}
	if over {
		c.State = StateOverloaded
		c.ShedTarget = max(c.ShedTarget, shedShare(hist, total, c.AdmitMinPriority)) + k.ShedStep
	} else if c.State != StateNormal {
		c.State = StateRecovering
		c.ShedTarget = max(0, c.ShedTarget-k.RecoverStep)
	}
	top := int32(0) // the highest priority present is never shed
	for p := 127; p >= 0; p-- {
		if hist[p] > 0 {
			top = int32(p)
			break
		}
	}
	c.ShedTarget = min(c.ShedTarget, shedShare(hist, total, top))
	c.AdmitMinPriority = thresholdFor(hist, total, c.ShedTarget, top)
	if c.State == StateRecovering && c.AdmitMinPriority == 0 && c.ShedTarget <= 0 {
		c.State = StateNormal
	}
}

// shedShare is the share of the load below priority threshold.
func shedShare(hist *[128]int64, total int64, threshold int32) float64 {
	var below int64
	for p := int32(0); p < threshold && p < 128; p++ {
		below += hist[p]
	}
	return float64(below) / float64(total)
}

// thresholdFor is the lowest threshold that sheds at least target of the
// load, capped at top.
func thresholdFor(hist *[128]int64, total int64, target float64, top int32) int32 {
	if target <= 0 {
		return 0
	}
	var below int64
	for p := int32(0); p < top; p++ {
		below += hist[p]
		if float64(below)/float64(total) >= target-1e-9 {
			return p + 1
		}
	}
	return top
}
