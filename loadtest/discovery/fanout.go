package main

import (
	"bytes"
	"errors"
	"sync/atomic"

	"github.com/sextant-mesh/sextant/loadtest/internal/longpoll"
)

// The simulated data planes are loadtest/internal/longpoll's: one
// keep-alive HTTP/1.1 connection each, driven by a few epoll loops on Linux
// (a goroutine each elsewhere), a request built once (only the version
// changes), answers read into a reused buffer and never decoded: the version (near the start of an answer), policy_age_ms
// (near its end) and the marker instance's weight are found by a byte scan.
// The old client (net/http, a pooled body buffer) spent more CPU than
// mesh-core on each answer; see docs/benchmarks.md.

// answerBuf fits an answer for 20 instances (about 3 KiB) and its head.
const answerBuf = 8 << 10

// newFanout prepares o.pollers long pollers of service at addr.
// computedAt[k] is when change k's policy was computed (Unix ms), to tell
// from an answer's policy_age_ms when mesh-core built it.
func newFanout(addr, token string, o options, computedAt []atomic.Int64) *longpoll.Fanout {
	target := "/v1/discovery/" + service + "?wait=" + o.wait.String() + "&version="
	return longpoll.New(longpoll.Config{
		Addr: addr, Token: token, Pollers: o.pollers, Changes: o.changes, Cumulative: true, BufSize: answerBuf,
		Target: func(int) string { return target },
		Decode: func(_ int, body []byte) (longpoll.Answer, error) { return decode(body, computedAt) },
	})
}

var (
	versionKey = []byte(`"version":`)
	ageKey     = []byte(`"policy_age_ms":`)
	weightKey  = []byte(`"weight":`)
	// markerKey starts the marker instance's object in an answer.
	markerKey = []byte(`"instance":"` + instanceID(0) + `"`)
)

var errNoVersion = errors.New(`answer without "version"`)

// decode reads an answer: its version (the first "version" member: the
// service's name before it is a plain name), the change it holds, and when
// mesh-core built it (computed_at of the policy + policy_age_ms, the last
// members but one), as Aux.
func decode(body []byte, computedAt []atomic.Int64) (longpoll.Answer, error) {
	v, ok := longpoll.Int(body, versionKey)
	if !ok {
		return longpoll.Answer{}, errNoVersion
	}
	a := longpoll.Answer{Version: v, Change: changeOf(body)}
	if age, ok := longpoll.LastInt(body, ageKey); ok && age >= 0 && a.Change >= 0 && a.Change < len(computedAt) {
		a.Aux = computedAt[a.Change].Load() + age
	}
	return a, nil
}

// changeOf tells an answer's change by the marker instance's weight (see
// weightsFor); -1 before the first policy. The answer's version is a content
// hash, so it cannot tell the order of changes.
func changeOf(body []byte) int {
	i := bytes.Index(body, markerKey)
	if i < 0 {
		return -1
	}
	w, ok := longpoll.Int(body[i+len(markerKey):], weightKey) // the next "weight" is the marker's own
	if !ok {
		return -1
	}
	return int(w) - 1
}
