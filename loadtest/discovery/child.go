package main

import (
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"

	"github.com/sextant-mesh/sextant/loadtest/internal/longpoll"
	"github.com/sextant-mesh/sextant/loadtest/internal/meshstack"
	"github.com/sextant-mesh/sextant/loadtest/internal/proc"
	"github.com/sextant-mesh/sextant/services/mesh-core/core"
)

// mesh-core runs in a child process so that its CPU time, memory and
// goroutines are its own, apart from the pollers' client side.

// target is where a running mesh-core answers.
// admin is the operators' token (it registers the instances); poller is a
// data plane's, issued as the config-center would, which the pollers send.
type target struct{ http, kitex, poll, admin, poller string }

// pollAddr is where data planes poll: port "poll" or "http".
func (tg target) pollAddr(port string) string {
	if port == "http" {
		return tg.http
	}
	return tg.poll
}

// startStack starts an embedded etcd with its data in dir and one mesh-core
// over it, on free loopback ports, and issues the pollers' token; stop
// stops both.
func startStack(dir string, log *slog.Logger) (tg target, stop func(), err error) {
	st, err := meshstack.Start(dir, log, func(c *core.Config) { c.PollAddr = "127.0.0.1:0" })
	if err != nil {
		return tg, nil, err
	}
	tokens, err := longpoll.IssueTokens(st.EtcdURL, st.Prefix, "loadtest-poller")
	if err != nil {
		st.Stop()
		return tg, nil, err
	}
	mc := st.MeshCore
	return target{http: mc.Addr(), kitex: mc.KitexAddr(), poll: mc.PollAddr(), admin: st.AdminToken, poller: tokens[0]}, st.Stop, nil
}

// serve is the child's side: start the stack, print its addresses on
// stdout (the parent's only way to learn ports of 0), run until signalled.
func serve() error {
	return meshstack.Serve("discovery-etcd-", startStack, func(tg target) {
		fmt.Println("serving", tg.http, tg.kitex, tg.poll, tg.admin, tg.poller)
	})
}

// child is the mesh-core process started by spawn.
type child struct {
	*proc.Child
	target target
}

// spawn re-executes this binary as the child with GOMAXPROCS procs and
// reads where it serves. A child that fails to start exits, which ends the
// read; one that says nothing for 60 s is stopped.
func spawn(procs int) (*child, error) {
	c, err := proc.Spawn([]string{serveArg}, procs, 60*time.Second)
	if err != nil {
		return nil, err
	}
	if f := strings.Fields(c.FirstLine); len(f) == 6 && f[0] == "serving" {
		return &child{Child: c, target: target{http: f[1], kitex: f[2], poll: f[3], admin: f[4], poller: f[5]}}, nil
	}
	c.Stop()
	return nil, fmt.Errorf("mesh-core child did not start: first line %q", c.FirstLine)
}

// cpuSeconds is process pid's CPU time so far; NaN when unknown (pid 0).
func cpuSeconds(pid int) float64 {
	v, err := proc.CPUSeconds(pid)
	if pid == 0 || err != nil {
		return math.NaN()
	}
	return v
}

// statusMiB reads a kB field of /proc/<pid>/status in MiB; NaN when unknown.
func statusMiB(pid int, field string) float64 {
	v, err := proc.StatusMiB(pid, field)
	if pid == 0 || err != nil {
		return math.NaN()
	}
	return v
}
