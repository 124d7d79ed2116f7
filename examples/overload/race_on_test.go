//go:build race

package overload_test

// raceDetector: the race detector makes every request several times more
// expensive, and the whole chain, the load generator and the control
// plane share this process; B's capacity is halved so that B, not the
// machine, stays the bottleneck.
const raceDetector = true
