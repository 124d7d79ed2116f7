// Package influxdev runs an influxd 1.8 process for `sextant dev` and the
// tests: bound to loopback, its data in a folder of its own, flux enabled,
// with Sextant's database and retention policy created.
package influxdev

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/sextant-mesh/sextant/internal/childproc"
)

// Database and RetentionPolicy are what the services write to.
const (
	Database        = "sextant"
	RetentionPolicy = "autogen"
	// Retention is how long points are kept.
	Retention = "30d"
)

// Server is a running influxd.
type Server struct {
	Bin, Dir, HTTPAddr, RPCAddr string
	cmd                         *exec.Cmd
	exited                      chan struct{}
}

// Find returns the influxd binary the Makefile installs (bin/influxd under
// the module root, searched from dir upward), or one on PATH.
func Find(dir string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			if p := filepath.Join(d, "bin", "influxd"); isFile(p) {
				return p, nil
			}
			break
		}
		if filepath.Dir(d) == d {
			break
		}
	}
	if p, err := exec.LookPath("influxd"); err == nil {
		return p, nil
	}
	return "", errors.New("influxd not found in bin/ or on PATH")
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// Start runs bin with its data in dir, HTTP on httpAddr and RPC on rpcAddr,
// waits until it answers, and creates the database.
func Start(bin, dir, httpAddr, rpcAddr string) (*Server, error) {
	s := &Server{Bin: bin, Dir: dir, HTTPAddr: httpAddr, RPCAddr: rpcAddr}
	return s, s.start()
}

func (s *Server) start() error {
	conf := fmt.Sprintf(`bind-address = %q
reporting-disabled = true
[meta]
  dir = %q
[data]
  dir = %q
  wal-dir = %q
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  bind-address = %q
  auth-enabled = false
  flux-enabled = true
  log-enabled = false
[logging]
  level = "warn"
`, s.RPCAddr, filepath.Join(s.Dir, "meta"), filepath.Join(s.Dir, "data"), filepath.Join(s.Dir, "wal"), s.HTTPAddr)
	confPath := filepath.Join(s.Dir, "influxd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(s.Dir, "influxd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	s.cmd = exec.Command(s.Bin, "-config", confPath)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = childproc.DieWithParent()
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start influxd: %w", err)
	}
	s.exited = make(chan struct{})
	go func() {
		_ = s.cmd.Wait()
		logf.Close()
		close(s.exited)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if resp, err := http.Get(s.URL() + "/ping"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				break
			}
		}
		select {
		case <-s.exited:
			return fmt.Errorf("influxd exited at start; see %s", filepath.Join(s.Dir, "influxd.log"))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return errors.New("influxd did not answer /ping within 60s")
		}
	}
	return s.Query(fmt.Sprintf("CREATE DATABASE %q WITH DURATION %s NAME %q", Database, Retention, RetentionPolicy))
}

// Pid is influxd's process id (0 when it is not running).
func (s *Server) Pid() int {
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// URL is the HTTP address.
func (s *Server) URL() string { return "http://" + s.HTTPAddr }

// Query runs an InfluxQL statement that returns nothing worth reading.
func (s *Server) Query(q string) error {
	resp, err := http.PostForm(s.URL()+"/query", url.Values{"q": {q}})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("influx %q: status %d", q, resp.StatusCode)
	}
	return nil
}

// Stop stops influxd (its data stays for Restart).
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// Restart starts influxd again on the same addresses and data.
func (s *Server) Restart() error { return s.start() }
