package calculator

import (
	"testing"

	"github.com/sextant-mesh/sextant/internal/etcdx"
	"github.com/sextant-mesh/sextant/internal/logx"
)

func TestParseKnobs(t *testing.T) {
	k, fe := ParseKnobs([]byte(`{"max_ejection_percent": 20, "blackout_ms": 30000}`))
	if fe != nil || k.MaxEjectionPercent != 20 || k.BlackoutMs != 30000 || k.EWMAAlpha != DefaultKnobs().EWMAAlpha {
		t.Fatalf("partial knobs: %+v, %v", k, fe)
	}
	for _, tc := range []struct{ doc, field string }{
		{`{"ewma_alpha": 0}`, "ewma_alpha"},
		{`{"max_ejection_percent": 130}`, "max_ejection_percent"},
		{`{"eval_windows": -1}`, "eval_windows"},
		{`{"shed_step": "5%"}`, "shed_step"},
		{`{"ejection": 3}`, "ejection"},
		{`{"overload_cpu": 1e999}`, "overload_cpu"},
	} {
		k, fe := ParseKnobs([]byte(tc.doc))
		if fe == nil || fe.Field != tc.field {
			t.Errorf("%s: error %v, want one on %q", tc.doc, fe, tc.field)
		}
		if k != DefaultKnobs() {
			t.Errorf("%s: knobs %+v, want the defaults", tc.doc, k)
		}
	}
}

// The store keeps each service's valid knobs; a bad document, another kind
// of config, or a deletion leave the service with the defaults.
func TestKnobStore(t *testing.T) {
	s := NewKnobStore(logx.Discard())
	s.Reset([]etcdx.Event{
		{Key: "a/calculator", Value: []byte(`{"min_requests": 99}`)},
		{Key: "b/calculator", Value: []byte(`{"min_requests": -5}`)},
		{Key: "c/rpc_timeout", Value: []byte(`{"min_requests": 7}`)},
		{Key: "malformed-no-kind", Value: []byte(`{}`)},
	}, 1)
	if s.For("a").MinRequests != 99 || s.For("b") != DefaultKnobs() || s.For("c") != DefaultKnobs() {
		t.Fatalf("a %+v, b %+v, c %+v", s.For("a"), s.For("b"), s.For("c"))
	}
	s.Apply([]etcdx.Event{{Key: "a/calculator", Deleted: true}, {Key: "b/calculator", Value: []byte(`{"min_requests": 3}`)}}, 2)
	if s.For("a") != DefaultKnobs() || s.For("b").MinRequests != 3 {
		t.Fatalf("after changes: a %+v, b %+v", s.For("a"), s.For("b"))
	}
}

// The config-center's overload config (its entry, with the document in
// force) sets the overload knobs over the calculator knobs or the defaults;
// a bad document or a deletion leaves them.
func TestKnobStoreOverloadConfig(t *testing.T) {
	s := NewKnobStore(logx.Discard())
	s.Reset([]etcdx.Event{
		{Key: "a/calculator", Value: []byte(`{"min_requests": 99, "overload_cpu": 0.7}`)},
		{Key: "a/overload", Value: []byte(`{"kind": "overload", "scope": "a", "revision": 7, "document": {"cpu": 0.8, "shed_step": 0.1}}`)},
		{Key: "b/overload", Value: []byte(`{"kind": "overload", "document": {"queue_time_ms": 50}}`)},
		{Key: "c/overload", Value: []byte(`{"kind": "overload", "document": {"cpu": 7}}`)},
	}, 1)
	a := s.For("a")
	if a.MinRequests != 99 || a.OverloadCPU != 0.8 || a.ShedStep != 0.1 || a.RecoverStep != DefaultKnobs().RecoverStep {
		t.Fatalf("a %+v", a)
	}
	if b := s.For("b"); b.OverloadQueueTimeMs != 50 || b.OverloadCPU != DefaultKnobs().OverloadCPU {
		t.Fatalf("b %+v", b)
	}
	if s.For("c") != DefaultKnobs() {
		t.Fatalf("c (invalid) %+v", s.For("c"))
	}
	s.Apply([]etcdx.Event{{Key: "a/overload", Deleted: true}}, 2)
	if a := s.For("a"); a.OverloadCPU != 0.7 || a.MinRequests != 99 {
		t.Fatalf("after the overload config went: a %+v", a)
	}
}

// Knobs written through the config-center come as its entry: the document
// in force applies; during a rollout the previous one does, until the
// rollout is promoted to everyone (the calculator serves the whole service).
func TestKnobStoreConfigCenterEntries(t *testing.T) {
	s := NewKnobStore(logx.Discard())
	s.Reset([]etcdx.Event{
		{Key: "a/calculator", Value: []byte(`{"kind":"calculator","scope":"a","revision":3,"document":{"min_requests":42}}`)},
		{Key: "b/calculator", Value: []byte(`{"kind":"calculator","scope":"b","revision":5,"document":{"min_requests":7},` +
			`"rollout":{"percent":20,"previous":{"min_requests":11},"previous_revision":4}}`)},
		{Key: "c/overload", Value: []byte(`{"kind":"overload","scope":"c","revision":6,"document":{"cpu":0.5},` +
			`"rollout":{"percent":50,"previous":{"cpu":0.8},"previous_revision":2}}`)},
		{Key: "d/calculator", Value: []byte(`{"document":{"min_requests":-1}}`)},
	}, 1)
	if got := s.For("a").MinRequests; got != 42 {
		t.Errorf("a: min_requests %d, want the document's 42", got)
	}
	if got := s.For("b").MinRequests; got != 11 {
		t.Errorf("b during a rollout: min_requests %d, want the previous document's 11", got)
	}
	if got := s.For("c").OverloadCPU; got != 0.8 {
		t.Errorf("c during a rollout: cpu %g, want the previous document's 0.8", got)
	}
	if s.For("d") != DefaultKnobs() {
		t.Errorf("d with an invalid document: %+v, want the defaults", s.For("d"))
	}
}
