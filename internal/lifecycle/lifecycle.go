// Package lifecycle runs a service as a group of components. Each component
// runs until its context is cancelled; a Group starts them in the order they
// were added, waiting for each to start, and stops them in the reverse order.
// A service declares its parts, and with them its start and stop order, once:
//
//	g := lifecycle.NewGroup()
//	g.Add("etcd client", lifecycle.Closer(cli))  // stops last
//	g.Add("registry mirror", lifecycle.Loop(mirror.Run))
//	g.Add("http", httpServer)                    // starts last, stops first
//	err := g.Start()                             // the first start error, at once
//	...
//	err = g.Stop(ctx)                            // reverse order, within ctx
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// Component is a part of a service with a lifecycle. Run runs until ctx is
// cancelled and returns nil on a clean stop. Run may be called with a ctx
// already cancelled: it then stops the component all the same if it was
// started (see Starter), else releases what it holds (a bound listener, a
// client), and returns.
type Component interface {
	Run(ctx context.Context) error
}

// Starter is a component whose start can fail: the group calls Start, and
// waits for it, before it calls Run. Start returns once the component serves,
// or with the error that kept it from serving; Run then serves until ctx is
// cancelled.
type Starter interface {
	Component
	Start() error
}

// Func is a component of a function that runs until ctx is cancelled.
type Func func(ctx context.Context) error

// Run calls f.
func (f Func) Run(ctx context.Context) error { return f(ctx) }

// Loop is a component of a background loop that returns when ctx ends: an
// etcd mirror, a health probe, a ticker. It ends cleanly.
type Loop func(ctx context.Context)

// Run calls f unless ctx has already ended.
func (f Loop) Run(ctx context.Context) error {
	if ctx.Err() == nil {
		f(ctx)
	}
	return nil
}

// OnStop is a component that does nothing until it is stopped, then calls f
// with the stop context (see StopContext): closing a client, flushing a
// writer, releasing waiting requests.
type OnStop func(ctx context.Context) error

// Run waits for ctx to end, then calls f.
func (f OnStop) Run(ctx context.Context) error {
	<-ctx.Done()
	return f(StopContext(ctx))
}

// Closer is a component that closes c when it is stopped.
func Closer(c io.Closer) Component {
	return OnStop(func(context.Context) error { return c.Close() })
}

var (
	_ Component = Func(nil)
	_ Component = Loop(nil)
	_ Component = OnStop(nil)
)

type stopKey struct{}

// stopBox holds the context Group.Stop was called with, for the components
// it cancels.
type stopBox struct {
	mu  sync.Mutex
	ctx context.Context
}

func (b *stopBox) set(ctx context.Context) {
	b.mu.Lock()
	b.ctx = ctx
	b.mu.Unlock()
}

func (b *stopBox) get() context.Context {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ctx
}

// StopContext is, for a component whose Run context was cancelled by
// Group.Stop, the context Stop was called with: its deadline is the time the
// component has left to finish (drain connections, flush). Otherwise it is ctx
// without its cancellation.
func StopContext(ctx context.Context) context.Context {
	if b, ok := ctx.Value(stopKey{}).(*stopBox); ok {
		if sctx := b.get(); sctx != nil {
			return sctx
		}
	}
	return context.WithoutCancel(ctx)
}

// RollbackTimeout bounds the stop of what had started when Start fails.
const RollbackTimeout = 30 * time.Second

// ErrStopped is Start's error after Stop.
var ErrStopped = errors.New("lifecycle: group stopped")

// Group runs components: it starts them in the order they were added and stops
// them in the reverse order. A component that fails after the group started
// (its Run returns an error before Stop) is reported by Failed and Err; the
// group's owner decides when to stop.
type Group struct {
	parts []*part

	// mu serializes Start and Stop.
	mu      sync.Mutex
	started bool
	stopped bool
	stopErr error

	failOnce sync.Once
	failed   chan struct{}
	failErr  error
}

// part is one component of a group and the state of its Run.
type part struct {
	name   string
	c      Component
	stop   stopBox
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned; nil until Run is called
	err    error         // what Run returned, read after done
}

// NewGroup returns an empty group.
func NewGroup() *Group { return &Group{failed: make(chan struct{})} }

// Add appends c, named name in errors. It panics after Start: the parts of a
// group, and their order, are declared before it runs.
func (g *Group) Add(name string, c Component) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.started || g.stopped {
		panic("lifecycle: Add after Start or Stop")
	}
	g.parts = append(g.parts, &part{name: name, c: c})
}

// Start starts the components in order, each once the one before has
// started: a Starter once its Start returned nil, any other component once its
// Run is called. It returns the first error at once, of a Start or of a
// component that failed meanwhile, after stopping (within RollbackTimeout)
// what it had started and releasing the rest.
func (g *Group) Start() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.stopped:
		return ErrStopped
	case g.started:
		return errors.New("lifecycle: group started twice")
	}
	g.started = true
	for _, p := range g.parts {
		err := g.startPart(p)
		if err == nil {
			err = g.Err()
		}
		if err != nil {
			ctx, cancel := context.WithTimeout(context.Background(), RollbackTimeout)
			defer cancel()
			g.stopped = true
			g.stopErr = g.stop(ctx)
			return errors.Join(err, g.stopErr)
		}
	}
	return nil
}

// startPart starts p: its Start, if it has one, then its Run in the background.
func (g *Group) startPart(p *part) error {
	if s, ok := p.c.(Starter); ok {
		if err := s.Start(); err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
	}
	g.run(p, false)
	return nil
}

// run calls p's Run in the background, with a context already cancelled when
// released is true (the group stops before p started).
func (g *Group) run(p *part, released bool) {
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), stopKey{}, &p.stop))
	p.cancel = cancel
	if released {
		cancel()
	}
	p.done = make(chan struct{})
	go func() {
		defer close(p.done)
		p.err = p.c.Run(ctx)
		if p.err != nil && ctx.Err() == nil {
			g.fail(fmt.Errorf("%s: %w", p.name, p.err))
		}
	}()
}

func (g *Group) fail(err error) {
	g.failOnce.Do(func() {
		g.failErr = err
		close(g.failed)
	})
}

// Failed is closed when a component fails after it started (its Run returned
// an error before Stop cancelled it).
func (g *Group) Failed() <-chan struct{} { return g.failed }

// Err is the first failure Failed reports, or nil.
func (g *Group) Err() error {
	select {
	case <-g.failed:
		return g.failErr
	default:
		return nil
	}
}

// Stop stops the components in the reverse order of Add: it cancels each
// one's context and waits for its Run to return before the next. A component
// that never started (Start failed or was never called) is run with a
// cancelled context so that it releases what it holds. When ctx ends first,
// Stop cancels the components left without waiting for them and says which
// did not stop. Stop returns the components' errors, first to stop first
// (errors.Join); once stopped, it returns the same errors again.
func (g *Group) Stop(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.stopped {
		g.stopped = true
		g.stopErr = g.stop(ctx)
	}
	return g.stopErr
}

func (g *Group) stop(ctx context.Context) error {
	var errs []error
	for i := len(g.parts) - 1; i >= 0; i-- {
		p := g.cancelPart(ctx, i)
		select {
		case <-p.done:
			if p.err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", p.name, p.err))
			}
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("%s: not stopped: %w", p.name, context.Cause(ctx)))
			for j := i - 1; j >= 0; j-- {
				g.cancelPart(ctx, j)
			}
			return errors.Join(errs...)
		}
	}
	return errors.Join(errs...)
}

// cancelPart hands ctx to part i as its stop context and cancels it.
func (g *Group) cancelPart(ctx context.Context, i int) *part {
	p := g.parts[i]
	p.stop.set(ctx)
	if p.done == nil {
		g.run(p, true)
	}
	p.cancel()
	return p
}

// Serve is the Run of a server component: it starts the server unless ctx
// has ended, serves until ctx ends or the server ends by itself (ended is
// closed; why says why), then stops it with the stop context. It returns
// the error that kept the server from starting or ended it, with stop's.
func Serve(ctx context.Context, start func() error, ended <-chan struct{}, why func() error, stop func(context.Context) error) error {
	var err error
	if ctx.Err() == nil {
		if err = start(); err == nil {
			select {
			case <-ended:
				err = why()
			case <-ctx.Done():
			}
		}
	}
	return errors.Join(err, stop(StopContext(ctx)))
}
