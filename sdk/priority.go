package sdk

import (
	"sync"
	"sync/atomic"

	"github.com/sextant-mesh/sextant/api/priorityrules"
)

// PriorityRulesKind is the config-center kind of priority rules: one
// document per server service, which gives requests arriving at the API
// layer their business priority from their features.
const PriorityRulesKind = "priority_rules"

// PriorityFeatures are what priority rules match a request on: HTTPMethod
// and Path (decoded, without the query) of an HTTP request, Method of a
// Kitex request, and Header, which returns a header's or metainfo key's
// value ("" when absent). Header is called with lower-case keys, so an HTTP
// getter must be case-insensitive (Hertz's RequestHeader.Peek is); nil
// matches no header condition.
type PriorityFeatures = priorityrules.Features

// PriorityRules are the priority rules in force, safe for concurrent use:
// Priority reads them without locks while Update or the config watcher
// replaces them.
type PriorityRules struct {
	cur atomic.Pointer[priorityState]
	mu  sync.Mutex // serializes Follow's updates
}

type priorityState struct {
	rules    *priorityrules.Rules
	revision int64 // of the config-center document; 0 when set with Update
}

// NewPriorityRules makes an empty PriorityRules: Priority answers false
// until rules are given.
func NewPriorityRules() *PriorityRules { return &PriorityRules{} }

// Update puts the rules of a priority_rules document in force. A document
// that does not decode strictly or is not valid is refused with a
// *api.FieldError naming the field (rules[1].match.http.path), and the
// rules in force stay.
func (p *PriorityRules) Update(doc []byte) error {
	return p.update(doc, 0)
}

func (p *PriorityRules) update(doc []byte, revision int64) error {
	r, fe := priorityrules.Parse(doc)
	if fe != nil {
		return fe
	}
	p.cur.Store(&priorityState{rules: r, revision: revision})
	return nil
}

// Clear removes the rules: Priority answers false.
func (p *PriorityRules) Clear() { p.cur.Store(nil) }

// Priority is the business priority the rules in force give the request f:
// the first matching rule's, in document order, else the document's
// default. With no rules in force it answers DefaultPriority (64) and
// false, so that a caller can keep the priority the request carries (so
// does a nil *PriorityRules).
func (p *PriorityRules) Priority(f PriorityFeatures) (int32, bool) {
	if p == nil {
		return priorityrules.DefaultPriority, false
	}
	s := p.cur.Load()
	if s == nil {
		return priorityrules.DefaultPriority, false
	}
	return s.rules.Priority(f), true
}

// Match is Priority that also names the matching rule ("" when the default
// applies or no rules are in force).
func (p *PriorityRules) Match(f PriorityFeatures) (rule string, priority int32, ok bool) {
	if p == nil {
		return "", priorityrules.DefaultPriority, false
	}
	s := p.cur.Load()
	if s == nil {
		return "", priorityrules.DefaultPriority, false
	}
	rule, priority = s.rules.Match(f)
	return rule, priority, true
}

// Revision is the config-center revision of the rules in force (Follow);
// 0 when none are, or when they were set with Update.
func (p *PriorityRules) Revision() int64 {
	if s := p.cur.Load(); s != nil {
		return s.revision
	}
	return 0
}

// Follow keeps the rules in force those of the priority_rules config of the
// watcher's service, as the config-center answers it for this instance
// (current, canary, previous or pinned): at once from the watcher's last
// answer, then from every new one. An answer without the config (deleted,
// or never written) clears the rules. A document the SDK refuses (say,
// from a newer config-center) is logged and the rules in force stay; while
// the config-center is away the watcher keeps its last answer, and so do
// the rules.
func (p *PriorityRules) Follow(w *ConfigWatcher) {
	// Each update applies the watcher's latest answer, under p.mu: whichever
	// runs last, the catch-up below or a listener, applies an answer at least
	// as new as every one stored before it, so an older answer never
	// overwrites a newer one.
	apply := func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.apply(w, w.Current())
	}
	w.OnChange(func(*WatchAnswer) { apply() })
	apply()
}

func (p *PriorityRules) apply(w *ConfigWatcher, a *WatchAnswer) {
	if a == nil {
		return // no answer yet
	}
	c, ok := a.Find(PriorityRulesKind, w.o.Service)
	if !ok {
		p.Clear()
		return
	}
	if s := p.cur.Load(); s != nil && s.revision == c.Revision && c.Revision != 0 {
		return // the same document, already in force
	}
	if err := p.update(c.Document, c.Revision); err != nil {
		w.o.Logger.Warn("priority_rules refused; keeping the rules in force",
			"service", w.o.Service, "revision", c.Revision, "err", err)
	}
}
