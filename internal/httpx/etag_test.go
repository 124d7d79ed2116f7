package httpx_test

import (
	"testing"

	"github.com/sextant-mesh/sextant/internal/httpx"
)

func TestETag(t *testing.T) {
	if got := httpx.ETag(42); got != `"42"` {
		t.Fatalf("ETag(42) = %s", got)
	}
	for _, tc := range []struct {
		tag      string
		version  int64
		weak, ok bool
	}{
		{`"42"`, 42, false, true},
		{` "42" `, 42, false, true},
		{`W/"42"`, 42, true, true},
		{`42`, 42, false, true}, // bare, as Sextant sent it before
		{`W/42`, 0, false, false},
		{`"4x"`, 0, false, false},
		{`"-1"`, 0, false, false},
		{`*`, 0, false, false},
		{``, 0, false, false},
		{`"`, 0, false, false},
	} {
		v, weak, ok := httpx.ParseETag(tc.tag)
		if v != tc.version || weak != tc.weak || ok != tc.ok {
			t.Errorf("ParseETag(%s) = %d, %v, %v; want %d, %v, %v", tc.tag, v, weak, ok, tc.version, tc.weak, tc.ok)
		}
	}
	for in, want := range map[string]int64{`"7"`: 7, `"7", "8"`: 7, `W/"7"`: 7, `7`: 7, `*`: 0, ``: 0} {
		if v, ok := httpx.IfNoneMatch(in); v != want || ok != (want != 0) {
			t.Errorf("IfNoneMatch(%s) = %d, %v", in, v, ok)
		}
	}
}
