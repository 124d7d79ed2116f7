package api_test

import (
	"testing"
	"unicode"

	"github.com/sextant-mesh/sextant/api"
)

// Name's ASCII path accepts and refuses exactly what the rule on runes does.
func TestNameAgreesWithTheRuneRule(t *testing.T) {
	rule := func(v string) bool {
		for _, r := range v {
			if r == unicode.ReplacementChar || unicode.IsSpace(r) || !unicode.IsPrint(r) {
				return false
			}
		}
		return true
	}
	var names []string
	for c := range 256 {
		names = append(names, string([]byte{byte(c)}), "svc-"+string([]byte{byte(c)})+"-1")
	}
	names = append(names, "10.0.0.1:8080", "café", "caf\u00e9 ", "a\u00a0b", "a\u200bb", "a\u2028b", "ok\xff", "\xe2\x82", "日本-svc")
	for _, v := range names {
		want := rule(v)
		if got := api.Name("f", v, true) == nil; got != want {
			t.Errorf("Name(%q) accepted %v, the rule says %v", v, got, want)
		}
	}
}
