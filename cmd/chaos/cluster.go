package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sextant-mesh/sextant/internal/childproc"
	"github.com/sextant-mesh/sextant/internal/etcdembed"
	"github.com/sextant-mesh/sextant/internal/freeport"
)

// freeAddr returns a loopback host:port that was free a moment ago and
// that no other process of the suite was given.
func freeAddr() string {
	addr, err := freeport.Addr()
	if err != nil {
		panic(err)
	}
	return addr
}

// process is one child process the suite runs: a service binary or an etcd
// member (this binary re-executed). Start and Kill may be called again to
// restart it with the same arguments, on the same ports.
type process struct {
	name string
	bin  string
	args []string
	log  io.Writer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = p.log, p.log
	cmd.SysProcAttr = childproc.DieWithParent()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	p.cmd, p.done = cmd, done
	return nil
}

// Kill sends SIGKILL and waits for the process to be gone.
func (p *process) Kill() { p.signal(syscall.SIGKILL) }

// Stop sends SIGTERM, then SIGKILL after 10 s.
func (p *process) Stop() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.Kill()
	}
}

func (p *process) signal(s syscall.Signal) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(s)
	<-done
}

// waitHTTP waits until GET url answers 200.
func waitHTTP(ctx context.Context, u string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after %s: %v", u, timeout, last)
}

// etcdMember is the configuration of one member of the suite's etcd cluster.
type etcdMember struct {
	Name, Client, Peer string
}

func initialCluster(members []etcdMember) string {
	var parts []string
	for _, m := range members {
		parts = append(parts, m.Name+"=http://"+m.Peer)
	}
	return strings.Join(parts, ",")
}

// runEtcdMember is the `chaos etcd-member` subcommand: one member of a
// cluster, in this process, until SIGTERM or SIGKILL.
func runEtcdMember(args []string) error {
	if len(args) != 5 {
		return errors.New("usage: chaos etcd-member NAME DIR CLIENT PEER INITIAL-CLUSTER")
	}
	name, dir, clientAddr, peerAddr, cluster := args[0], args[1], args[2], args[3], args[4]
	e, err := etcdembed.StartMember(name, dir, clientAddr, peerAddr, cluster)
	if err != nil {
		return err
	}
	defer e.Close()
	term := make(chan os.Signal, 1)
	notifyTerm(term)
	select {
	case <-term:
	case err := <-e.Err():
		return err
	}
	return nil
}
