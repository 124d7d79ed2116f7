package sim

import (
	"fmt"
	"time"
)

// Nominal instance: 8 workers, 20 ms of service: 400 requests/s.
const (
	nominalWorkers = 8
	nominalService = 20 * time.Millisecond
)

func nominal(n int, prefix, zone string) []InstanceSpec {
	out := make([]InstanceSpec, n)
	for i := range out {
		out[i] = InstanceSpec{ID: fmt.Sprintf("%s-%02d", prefix, i), Zone: zone, Class: "nominal",
			Workers: nominalWorkers, Service: nominalService}
	}
	return out
}

// slow is a behavior: slower by factor and failing errRate of its requests.
func slow(factor, errRate float64) func(time.Duration) Behavior {
	return func(time.Duration) Behavior { return Behavior{Slowdown: factor, ErrRate: errRate} }
}

func base(name, desc string, inst []InstanceSpec, rate float64, d time.Duration) Scenario {
	return Scenario{Name: name, Description: desc, Instances: inst, Callers: 1, Rate: rate, Duration: d,
		Warmup: 20 * time.Second, Timeout: time.Second, SteadyAfter: 60 * time.Second}
}

// Scenarios are the situations every strategy is run in.
func Scenarios() []Scenario {
	var out []Scenario

	s := base("slow-5x", "10 instances at 50 % load; one is 5x slower and fails 5 % of its calls, for 10 minutes",
		nominal(10, "i", "a"), 2000, 10*time.Minute)
	s.Instances[3].Behave, s.Instances[3].Class = slow(5, 0.05), "slow"
	out = append(out, s)

	s = base("fast-failure", "10 instances at 50 % load; one fails half its calls at once (1 ms), which latency-only rules find attractive",
		nominal(10, "i", "a"), 2000, 3*time.Minute)
	s.Instances[3].Behave = func(time.Duration) Behavior { return Behavior{Slowdown: 1, FastFail: 0.5} }
	s.Instances[3].Class = "failing"
	out = append(out, s)

	for _, load := range []float64{0.80, 0.95} {
		inst := nominal(10, "i", "a")
		for i := range inst {
			if i%2 == 0 {
				inst[i].Workers, inst[i].Class = 8, "big" // 400/s
			} else {
				inst[i].Workers, inst[i].Class = 2, "small" // 100/s
			}
		}
		total := 5*400.0 + 5*100.0
		out = append(out, base(fmt.Sprintf("hetero-%.0f", load*100),
			fmt.Sprintf("half the instances have 4x the capacity of the others; %.0f %% of the total capacity is offered", load*100),
			inst, load*total, 3*time.Minute))
	}

	s = base("flapping", "10 instances at 50 % load; one is 5x slower for 30 s, then healthy for 30 s, again and again",
		nominal(10, "i", "a"), 2000, 5*time.Minute)
	s.Instances[3].Class = "flapping"
	s.Instances[3].Behave = func(t time.Duration) Behavior {
		if (t/(30*time.Second))%2 == 1 {
			return Behavior{Slowdown: 5}
		}
		return Healthy
	}
	out = append(out, s)

	inst := nominal(10, "i", "a")
	for i := 5; i < 10; i++ {
		inst[i].JoinAt, inst[i].Cold, inst[i].Warmup = 60*time.Second, 3, 30*time.Second
	}
	s = base("scale-out", "5 instances at 80 % load; at 60 s, 5 new instances join, 3x slower while they warm up over 30 s",
		inst, 1600, 3*time.Minute)
	out = append(out, s)

	inst = append(append(nominal(4, "a", "zone-a"), nominal(3, "b", "zone-b")...), nominal(3, "c", "zone-c")...)
	for i := 7; i < 10; i++ {
		inst[i].Behave, inst[i].Class = slow(3, 0), "slow-zone"
	}
	out = append(out, base("slow-zone", "10 instances in three zones at 50 % load; the 3 of zone c are 3x slower (a slow dependency there)",
		inst, 2000, 3*time.Minute))

	inst = make([]InstanceSpec, 100)
	for i := range inst {
		inst[i] = InstanceSpec{ID: fmt.Sprintf("i-%03d", i), Zone: "a", Class: "nominal", Workers: 2, Service: nominalService}
		if i%10 == 7 {
			inst[i].Behave, inst[i].Class = slow(5, 0), "slow"
		}
	}
	out = append(out, base("hundred", "100 instances of 100 requests/s at 45 % load; 10 of them are 5x slower", inst, 4500, 2*time.Minute))

	s = base("many-callers", "50 callers with 1/50 of the traffic each, 10 instances at 50 % load; one is 5x slower and fails 5 %",
		nominal(10, "i", "a"), 2000, 3*time.Minute)
	s.Callers = 50
	s.Instances[3].Behave, s.Instances[3].Class = slow(5, 0.05), "slow"
	out = append(out, s)
	return out
}

// ZoneScenarios are the zone-aware routing scenarios: two zones of
// unequal capacity (6 and 4 nominal instances), callers half in each, 2 ms
// more for a request that crosses zones.
func ZoneScenarios() []Scenario {
	zones := func(name, desc string, rate float64, callerZones []string) Scenario {
		s := base(name, desc, append(nominal(6, "a", "zone-a"), nominal(4, "b", "zone-b")...), rate, 3*time.Minute)
		s.Callers, s.CallerZones, s.CrossZoneRTT = 20, callerZones, 2*time.Millisecond
		return s
	}
	half := []string{"zone-a", "zone-b"}
	return []Scenario{
		zones("zones-40", "zone a has 60 % of the capacity, zone b 40 %; callers half in each; 40 % load: each zone can serve its own callers",
			1600, half),
		zones("zones-80", "the same at 80 % load, callers half in each: zone b's callers need more than zone b has",
			3200, half),
	}
}

// ScenarioByName returns the scenario called name.
func ScenarioByName(name string) (Scenario, bool) {
	for _, s := range Scenarios() {
		if s.Name == name {
			return s, true
		}
	}
	return Scenario{}, false
}
