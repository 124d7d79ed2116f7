package tsdb

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sextant-mesh/sextant/internal/lifecycle"
)

// closeWithin bounds the flush at stop: InfluxDB may be what is down, and a
// service must not wait on it.
const closeWithin = 2 * time.Second

// Closer is the writer as a service's component: when the service stops, it
// flushes what is queued for at most 2 s of the stop's time, and closes.
// Added before the components that write, it stops after them.
func (w *Writer) Closer() lifecycle.Component {
	return lifecycle.OnStop(func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, closeWithin)
		defer cancel()
		w.Close(ctx)
		return nil
	})
}

// Exporter is Export as a service's component.
func (w *Writer) Exporter(g prometheus.Gatherer, measurement, prefix string, tags map[string]string) lifecycle.Component {
	return lifecycle.Loop(func(ctx context.Context) { w.Export(ctx, g, measurement, prefix, tags) })
}
