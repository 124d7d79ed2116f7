package calculator

import (
	"fmt"
	"testing"
)

func TestZoneRouting(t *testing.T) {
	for _, tc := range []struct {
		name             string
		capacity, demand map[string]float64
		want             string
	}{
		{"each zone covers its callers: all local",
			map[string]float64{"a": 2400, "b": 1600}, map[string]float64{"a": 800, "b": 800},
			"map[a:map[a:1] b:map[b:1]]"},
		{"b short of headroom: its overflow to a's spare",
			// b: 0.8 x 1600 = 1280 local of 1600; 320 to a, whose spare is 1920 - 1600 = 320.
			map[string]float64{"a": 2400, "b": 1600}, map[string]float64{"a": 1600, "b": 1600},
			"map[a:map[a:1] b:map[a:0.2 b:0.8]]"},
		{"above the headroom overall: load in proportion to capacity",
			// 3800 of 4000: c_b 0.4 for d_b 0.5 keeps 80 %, the rest to a.
			map[string]float64{"a": 2400, "b": 1600}, map[string]float64{"a": 1900, "b": 1900},
			"map[a:map[a:1] b:map[a:0.2 b:0.8]]"},
		{"callers in a zone without instances go where there is room",
			map[string]float64{"a": 1000, "b": 1000}, map[string]float64{"c": 300, "a": 700, "b": 100},
			"map[a:map[a:1] b:map[b:1] c:map[a:0.125 b:0.875]]"},
		{"no demand", map[string]float64{"a": 1}, nil, "map[]"},
	} {
		if got := fmt.Sprint(zoneRouting(tc.capacity, tc.demand, 0.8)); got != tc.want && !(tc.want == "map[]" && got == "map[]") {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}
