// Package sdkgraph checks what a user inherits by importing the SDK: a
// throwaway module imports each SDK module and its module graph must hold
// none of the control plane's dependencies.
package sdkgraph

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The control plane's heavy dependencies, which no SDK user should build.
var (
	etcdServer = "go.etcd.io/etcd/server"
	gin        = "github.com/gin-gonic/gin"
	k8s        = "k8s.io/"
	influx     = "github.com/influxdata/"
	sonic      = "github.com/bytedance/sonic"
	prometheus = "github.com/prometheus/"
	hertz      = "github.com/cloudwego/hertz"
	kitex      = "github.com/cloudwego/kitex"
)

func TestUserModuleGraphs(t *testing.T) {
	if testing.Short() {
		t.Skip("builds throwaway modules")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, pkg string
		forbidden []string
	}{
		{"core SDK", "github.com/sextant-mesh/sextant/sdk", []string{etcdServer, gin, k8s, influx, sonic, prometheus, hertz, kitex}},
		{"Kitex adapter", "github.com/sextant-mesh/sextant/sdk/kitexsdk", []string{etcdServer, gin, k8s, influx, hertz}},
		{"Hertz adapter", "github.com/sextant-mesh/sextant/sdk/hertzsdk", []string{etcdServer, gin, k8s, influx, prometheus, kitex}},
		{"NATS adapter", "github.com/sextant-mesh/sextant/sdk/natssdk", []string{etcdServer, gin, k8s, influx, sonic, prometheus, hertz, kitex}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			goMod := "module example.com/user\n\ngo 1.26.0\n\nreplace (\n" +
				"\tgithub.com/sextant-mesh/sextant/api => " + filepath.Join(root, "api") + "\n" +
				"\tgithub.com/sextant-mesh/sextant/sdk => " + filepath.Join(root, "sdk") + "\n" +
				"\tgithub.com/sextant-mesh/sextant/sdk/kitexsdk => " + filepath.Join(root, "sdk/kitexsdk") + "\n" +
				"\tgithub.com/sextant-mesh/sextant/sdk/hertzsdk => " + filepath.Join(root, "sdk/hertzsdk") + "\n" +
				"\tgithub.com/sextant-mesh/sextant/sdk/natssdk => " + filepath.Join(root, "sdk/natssdk") + "\n)\n"
			mainGo := "package main\n\nimport _ \"" + tc.pkg + "\"\n\nfunc main() {}\n"
			write(t, filepath.Join(dir, "go.mod"), goMod)
			write(t, filepath.Join(dir, "main.go"), mainGo)
			run(t, dir, "go", "mod", "edit", "-require="+tc.pkg+"@v0.0.0", "-require=github.com/sextant-mesh/sextant/api@v0.0.0", "-require=github.com/sextant-mesh/sextant/sdk@v0.0.0")
			run(t, dir, "go", "mod", "tidy")
			graph := run(t, dir, "go", "mod", "graph")
			deps := run(t, dir, "go", "list", "-deps", "-f", "{{with .Module}}{{.Path}}{{end}}", ".")
			for _, f := range tc.forbidden {
				for _, out := range []string{graph, deps} {
					if i := strings.Index(out, f); i >= 0 {
						line := out[strings.LastIndexByte(out[:i], '\n')+1:]
						if j := strings.IndexByte(line, '\n'); j >= 0 {
							line = line[:j]
						}
						t.Errorf("a module importing %s inherits %s: %q", tc.pkg, f, line)
						break
					}
				}
			}
			run(t, dir, "go", "build", "./...")
		})
	}
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	// The throwaway module stands alone, as a user's would.
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
