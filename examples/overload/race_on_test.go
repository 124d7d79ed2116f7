//go:build race

package overload_test

// raceDetector: the race detector makes every request several times more
// expensive, and the whole chain, the load generator and the control
// plane share this process. At 400 requests/s a loaded 2-core machine
// gives this process less CPU than the chain needs: requests then wait in
// the Go scheduler and in socket buffers, before any service's Gate, past
// the load's 1 s timeout, and the machine, not B, is the bottleneck (B's
// workers sit idle while the front times out). B's requests are made 4x
// as long instead (100 requests/s), so that B stays the bottleneck.
const raceDetector = true
