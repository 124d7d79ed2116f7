package sdk

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/sdk/backoff"
)

// EffectiveConfig is one governance config as this instance applies it.
type EffectiveConfig = api.Effective

// WatchAnswer is what the config-center says this instance applies.
type WatchAnswer = api.WatchAnswer

// ConfigWatcher long-polls the config-center for what one instance applies,
// reports the version it applied on the next poll, and keeps the last good
// answer while the config-center is away.
type ConfigWatcher struct {
	o      ConfigWatcherOptions
	client *http.Client
	retry  backoff.Policy
	answer atomic.Pointer[WatchAnswer]
	access atomic.Pointer[AccessRules]
	cache  *diskCache
	cached atomic.Pointer[time.Time] // when the answer in hand came from the disk cache: when it was received

	mu        sync.Mutex
	listeners []func(*WatchAnswer)
	cancel    context.CancelFunc
	done      chan struct{}
}

// ConfigWatcherOptions configure a ConfigWatcher.
type ConfigWatcherOptions struct {
	// ConfigCenter is the config-center's address: host:port for plain
	// HTTP, or a URL such as https://host:port.
	ConfigCenter string
	Service      string
	Instance     string
	// Calls names the services this one calls, for their dynamic policies.
	Calls  []string
	Wait   time.Duration
	Token  string // credential (default: $SEXTANT_TOKEN): the service's data-plane token
	Logger *slog.Logger
	// HTTPClient carries the TLS configuration (nil: the default client).
	HTTPClient *http.Client
	// CacheDir, if set, is a directory where the last answer is kept on
	// disk (one file per service), for a process that starts while the
	// config-center cannot be reached: its first failed poll applies the
	// cached answer (FromCache) until the config-center answers.
	CacheDir string
}

// NewConfigWatcher makes a watcher; Start polls.
func NewConfigWatcher(o ConfigWatcherOptions) *ConfigWatcher {
	if o.Wait <= 0 {
		o.Wait = 30 * time.Second
	}
	o.Token = tokenOf(o.Token)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	// The workload's automatic identity asks this config-center for its
	// certificate (WorkloadOf).
	nameConfigCenter(o.Token, o.ConfigCenter, o.HTTPClient)
	return &ConfigWatcher{o: o, client: httpClient(o.HTTPClient, o.Wait+10*time.Second),
		retry: backoff.Policy{Base: 200 * time.Millisecond, Max: 10 * time.Second},
		cache: newDiskCache(o.CacheDir, o.Logger)}
}

// OnChange adds a listener called with every new answer.
func (w *ConfigWatcher) OnChange(f func(*WatchAnswer)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.listeners = append(w.listeners, f)
}

// Current is the last answer; nil before the first.
func (w *ConfigWatcher) Current() *WatchAnswer { return w.answer.Load() }

// FromCache says whether the answer in hand was read from the disk cache
// (CacheDir) of a previous run, because the config-center could not be
// reached at start, and when that run received it. It is stale: the first
// answer of the config-center replaces it.
func (w *ConfigWatcher) FromCache() (receivedAt time.Time, ok bool) {
	if at := w.cached.Load(); at != nil {
		return *at, true
	}
	return time.Time{}, false
}

// AccessRules are the service's access rules in force (nil: none).
func (w *ConfigWatcher) AccessRules() *AccessRules { return w.access.Load() }

// Start polls in the background; Close stops.
func (w *ConfigWatcher) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel, w.done = cancel, make(chan struct{})
	go w.run(ctx)
}

// Close stops polling.
func (w *ConfigWatcher) Close() {
	if w.cancel != nil {
		w.cancel()
		<-w.done
	}
}

func (w *ConfigWatcher) run(ctx context.Context) {
	defer close(w.done)
	var version int64
	var etag string
	failures := 0
	cacheRead := false
	for ctx.Err() == nil {
		a, err := w.poll(ctx, version, &etag)
		if err != nil {
			failures++
			if failures == 1 || failures%30 == 0 {
				w.o.Logger.Warn("config-center unreachable; keeping the last config", "err", err, "failures", failures)
			}
			if !cacheRead && w.answer.Load() == nil {
				// The version polled stays 0: the config-center's first
				// answer is a whole one, and nothing cached is acknowledged.
				cacheRead = true
				w.fromCache()
			}
			w.retry.Sleep(ctx, failures)
			continue
		}
		failures = 0
		if a == nil {
			continue
		}
		version = a.Version
		w.cached.Store(nil)
		w.apply(a)
		w.cache.save("config", w.o.Service, a, time.Now())
	}
}

// fromCache applies the disk cache's answer, if any.
func (w *ConfigWatcher) fromCache() {
	var a WatchAnswer
	at, ok := w.cache.load("config", w.o.Service, &a)
	if !ok || a.Service != w.o.Service {
		return
	}
	w.o.Logger.Info("config-center unreachable at start; applying the disk cache's answer", "service", w.o.Service, "received", at, "configs", len(a.Configs))
	w.cached.Store(&at)
	w.apply(&a)
}

func (w *ConfigWatcher) apply(a *WatchAnswer) {
	var rules *AccessRules
	if c, ok := a.Find("access_control", w.o.Service); ok {
		var r AccessRules
		if json.Unmarshal(c.Document, &r) == nil {
			rules = &r
		}
	}
	w.access.Store(rules)
	w.answer.Store(a)
	w.mu.Lock()
	ls := append([]func(*WatchAnswer){}, w.listeners...)
	w.mu.Unlock()
	for _, l := range ls {
		l(a)
	}
}

// poll runs one long poll; etag is the ETag of the answer held (longPoll).
func (w *ConfigWatcher) poll(ctx context.Context, version int64, etag *string) (*WatchAnswer, error) {
	q := url.Values{"service": {w.o.Service}, "instance": {w.o.Instance},
		"version": {fmt.Sprint(version)}, "wait": {w.o.Wait.String()}}
	if version != 0 {
		q.Set("applied", fmt.Sprint(version)) // the last answer is applied by now
	}
	if len(w.o.Calls) > 0 {
		q.Set("calls", strings.Join(w.o.Calls, ","))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL(w.o.ConfigCenter)+"/v1/watch?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	authorize(req, w.o.Token)
	var a WatchAnswer
	changed, err := longPoll(w.client, req, &a, etag)
	if err != nil || !changed {
		return nil, err
	}
	return &a, nil
}
