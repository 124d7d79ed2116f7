//go:build race

package overload_test

// raceDetector: the race detector makes every request several times more
// expensive, and the whole chain, the load generator and the control
// plane share this process; B's capacity is halved so that B, not the
// machine, stays the bottleneck. Even so the chain needs most of a 2-core
// machine: with less CPU, requests wait in the Go scheduler and in socket
// buffers before any service's Gate, past the load's 1 s timeout, while
// B's workers sit idle. make test runs this package alone for that reason.
// (B at 100 requests/s with 80 ms requests halves the CPU but not the
// problem, and its queueing against the 20 ms threshold holds goodput near
// 72 %.)
const raceDetector = true
