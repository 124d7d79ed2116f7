package sdk_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/sdk"
	"github.com/sextant-mesh/sextant/sdk/backoff"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixer"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixertest"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculatortest"
)

// A mixer stopped and started again while a reporter runs: the windows of
// the outage are kept and sent when it is back; every window the reporter
// closed reached the calculator or is counted as dropped (here none is).
func TestReporterOutlivesAMixerRestart(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	prefix := testenv.Prefix(t)
	calc := calculatortest.Start(t, etcd, prefix, "calc-1", nil)
	addr := testenv.FreeAddr(t)
	onAddr := func(c *mixer.Config) { c.HTTPAddr = addr }
	mx := mixertest.Start(t, etcd, prefix, onAddr)
	testenv.WaitMetric(t, mx.Addr(), "sextant_mixer_shards", 1)

	rep := sdk.NewReporter(sdk.ReporterOptions{Mixer: addr, Token: testenv.ServiceToken(t, etcd, prefix, "front"),
		Service: "front", Instance: "10.0.0.1:8080", Window: 100 * time.Millisecond, MaxPending: 100,
		Retry: backoff.Policy{Base: 50 * time.Millisecond, Max: 200 * time.Millisecond}})
	rep.Start()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // a steady load: every window has server and call data
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				rep.RecordServed(sdk.Priority{Business: 64}, time.Millisecond, 2*time.Millisecond, 1)
				rep.RecordCall("comment-svc", "10.0.0.9:9000", 3*time.Millisecond, false, false)
			}
		}
	}()
	testenv.Eventually(t, 20*time.Second, func() error {
		if st := rep.Stats(); st.Sent < 5 {
			return fmt.Errorf("%d windows sent", st.Sent)
		}
		return nil
	})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := mx.Stop(ctx); err != nil {
		t.Fatalf("stop the mixer: %v", err)
	}
	before := rep.Stats()
	time.Sleep(1500 * time.Millisecond) // about 15 windows while the mixer is away
	during := rep.Stats()
	if during.Pending < 5 || during.Retries <= before.Retries {
		t.Fatalf("while the mixer is away: %+v, want windows pending and sends retried", during)
	}
	mx2 := mixertest.Start(t, etcd, prefix, onAddr)
	testenv.WaitMetric(t, mx2.Addr(), "sextant_mixer_shards", 1)
	testenv.Eventually(t, 20*time.Second, func() error {
		if st := rep.Stats(); st.Sent < during.Windows+3 {
			return fmt.Errorf("%d windows sent of %d", st.Sent, st.Windows)
		}
		return nil
	})
	close(stop)
	wg.Wait()
	rep.Close()

	st := rep.Stats()
	var dropped int64
	for _, n := range st.DroppedWindows {
		dropped += n
	}
	if st.Pending != 0 || dropped != 0 || st.Sent != st.Windows+st.Splits {
		t.Fatalf("after the restart: %+v, want every window sent", st)
	}
	// Each window's server part reached the calculator: one record each.
	testenv.Eventually(t, 20*time.Second, func() error {
		got := testenv.Metric(t, calc.AdminAddr(), `sextant_calculator_records_total{kind="server",outcome="accepted"}`) +
			testenv.Metric(t, calc.AdminAddr(), `sextant_calculator_records_total{kind="server",outcome="late"}`)
		if int64(got) != st.Sent {
			return fmt.Errorf("the calculator has %v server records, the reporter sent %d windows", got, st.Sent)
		}
		return nil
	})
}
