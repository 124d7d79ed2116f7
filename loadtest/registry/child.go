package main

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sextant-mesh/sextant/internal/freeport"

	"github.com/sextant-mesh/sextant/internal/etcdembed"
	"github.com/sextant-mesh/sextant/internal/logx"
	"github.com/sextant-mesh/sextant/loadtest/internal/proc"
	"github.com/sextant-mesh/sextant/services/mesh-core/core"
)

// etcd and mesh-core each run in a child process of their own, so that the
// CPU time of each is its own and apart from the load generator's.

// The first argument that makes this binary a child; not flags, so that
// -help does not show them.
const (
	serveEtcdArg     = "-serve-etcd"
	serveMeshCoreArg = "-serve-mesh-core" // followed by etcd's client URL
)

// startEtcd starts an embedded etcd with its data in dir.
func startEtcd(dir string) (*etcdembed.Server, error) {
	client, err := freeport.Addr()
	if err != nil {
		return nil, err
	}
	peer, err := freeport.Addr()
	if err != nil {
		return nil, err
	}
	return etcdembed.Start(dir, client, peer)
}

// startMeshCore starts one mesh-core over etcd at etcdURL on free loopback
// ports, with its defaults otherwise (coalescing, session TTL, reaping).
func startMeshCore(etcdURL string, log *slog.Logger) (*core.MeshCore, error) {
	cfg := core.DefaultConfig()
	cfg.HTTPAddr, cfg.KitexAddr, cfg.PollAddr, cfg.Etcd.Endpoints = "127.0.0.1:0", "127.0.0.1:0", "", etcdURL
	cfg.ShutdownGrace = 2 * time.Second
	mc, err := core.New(cfg, log)
	if err != nil {
		return nil, err
	}
	if err := mc.Start(); err != nil {
		return nil, err
	}
	return mc, nil
}

func stopMeshCore(mc *core.MeshCore) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = mc.Stop(ctx)
}

// serveEtcd is the etcd child: it prints "serving <client URL>" and runs
// until signalled.
func serveEtcd() error {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	dir, err := os.MkdirTemp("", "regbench-etcd-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	e, err := startEtcd(dir)
	if err != nil {
		return err
	}
	fmt.Println("serving", e.ClientURL)
	<-sigs
	e.Close()
	return nil
}

// serveMeshCore is the mesh-core child: it prints "serving <HTTP address>"
// and runs until signalled.
func serveMeshCore(etcdURL string) error {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	logx.QuietFrameworks()
	mc, err := startMeshCore(etcdURL, slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		return err
	}
	fmt.Println("serving", mc.Addr())
	<-sigs
	stopMeshCore(mc)
	return nil
}

// spawn re-executes this binary as a child with args and GOMAXPROCS procs
// and reads where it serves.
func spawn(procs int, args ...string) (*proc.Child, string, error) {
	c, err := proc.Spawn(args, procs, 60*time.Second)
	if err != nil {
		return nil, "", err
	}
	if f := strings.Fields(c.FirstLine); len(f) == 2 && f[0] == "serving" {
		return c, f[1], nil
	}
	c.Stop()
	return nil, "", fmt.Errorf("%s child did not start: first line %q", args[0], c.FirstLine)
}

// cpuSeconds is process pid's CPU time so far; NaN when unknown (pid 0:
// the server runs inside this process, as in the test).
func cpuSeconds(pid int) float64 {
	if pid == 0 {
		return math.NaN()
	}
	v, err := proc.CPUSeconds(pid)
	if err != nil {
		return math.NaN()
	}
	return v
}

// rssMiB is process pid's VmRSS; NaN when unknown.
func rssMiB(pid int) float64 {
	if pid == 0 {
		return math.NaN()
	}
	v, err := proc.StatusMiB(pid, "VmRSS")
	if err != nil {
		return math.NaN()
	}
	return v
}
