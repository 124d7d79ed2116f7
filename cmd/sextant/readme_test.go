package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sextant-mesh/sextant/cmd/sextant/devplane"
	"github.com/sextant-mesh/sextant/internal/testenv"
)

// The README's quick start works as printed: its shell blocks, run against
// `sextant dev` (on free ports, the README's ports substituted), issue the
// tokens, report, register, discover, write and watch a config, each
// answered as the README says.
func TestReadmeQuickStart(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("the README's examples use curl")
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	start := bytes.Index(readme, []byte("## Quick start"))
	end := bytes.Index(readme, []byte("See the loop work"))
	if start < 0 || end < start {
		t.Fatal("README.md: no quick start section")
	}
	blocks := regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllSubmatch(readme[start:end], -1)
	if len(blocks) < 5 {
		t.Fatalf("README.md: %d shell blocks in the quick start, want the make block and four more", len(blocks))
	}

	bin := filepath.Join(t.TempDir(), "sextant")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	const admin = "readme-admin-token"
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan devplane.Addrs, 1)
	done := make(chan error, 1)
	cfg, err := devplane.Parse("sextant dev", []string{
		"-data-dir", t.TempDir(), "-etcd-client-addr", testenv.FreeAddr(t), "-etcd-peer-addr", testenv.FreeAddr(t),
		"-mixer-addr", "127.0.0.1:0", "-calculator-addr", "127.0.0.1:0", "-calculator-admin-addr", "127.0.0.1:0",
		"-mesh-core-addr", "127.0.0.1:0", "-mesh-core-kitex-addr", "127.0.0.1:0", "-mesh-core-poll-addr", "127.0.0.1:0", "-mesh-core-xds-addr", "127.0.0.1:0",
		"-config-center-addr", "127.0.0.1:0", "-influxd", "", "-admin-token", admin,
	}, io.Discard, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Ready = func(a devplane.Addrs) { ready <- a }
	go func() { done <- cfg.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	var a devplane.Addrs
	select {
	case a = <-ready:
	case err := <-done:
		t.Fatalf("sextant dev: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("sextant dev not ready after 60s")
	}

	// The README's commands, on this control plane's ports; the long poll
	// that waits for a version the reader picks is left out.
	var script strings.Builder
	script.WriteString("set -eu\n")
	ports := strings.NewReplacer("localhost:7701", a.Mixer, "localhost:7712", a.CalculatorAdmin,
		"localhost:7703", a.MeshCore, "localhost:7733", a.MeshCorePoll, "localhost:7704", a.ConfigCenter,
		"go run ./cmd/sextant", bin, "export SEXTANT_ADMIN_TOKEN=...", "export SEXTANT_ADMIN_TOKEN="+admin)
	for _, b := range blocks[1:] {
		for _, line := range strings.SplitAfter(strings.ReplaceAll(string(b[1]), "\\\n", ""), "\n") {
			if strings.Contains(line, "version=V") {
				continue
			}
			line = ports.Replace(line)
			if strings.Contains(line, "/v1/discovery/") {
				// A registration reaches discovery through etcd a moment
				// later (docs/discovery.md): a reader sees it, a script may
				// be quicker; ask until it shows.
				line = regexp.MustCompile(`\s+#.*`).ReplaceAllString(strings.TrimSpace(line), "")
				line = "for i in $(seq 50); do out=$(" + line + `); case "$out" in *10.0.0.9*) break;; esac; sleep 0.1; done; echo "$out"` + "\n"
			}
			script.WriteString(line)
		}
		script.WriteString("echo\n")
	}
	cmd := exec.Command("bash", "-c", script.String())
	cmd.Env = append(os.Environ(), "SEXTANT_CONFIG_CENTER="+a.ConfigCenter)
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("the README's commands: %v", err)
	}
	for _, want := range []string{
		`{"accepted":1}`, // the report, with feed-api's token
		`"service":"comment-svc","instance":"10.0.0.9:9000"`,  // the registration, with comment-svc's
		`"instances":[{"instance":"10.0.0.9:9000"`,            // discovery, with feed-api's
		`"kind":"rpc_timeout","scope":"feed-api/comment-svc"`, // the write, as the operator
		`"configs":[{"kind":"rpc_timeout"`,                    // the watch, with feed-api's
	} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("the README's commands printed no %s", want)
		}
	}
	if bytes.Contains(out, []byte(`"unauthenticated"`)) || bytes.Contains(out, []byte(`"forbidden"`)) {
		t.Errorf("a README command was refused")
	}
}
