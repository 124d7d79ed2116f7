// Package layers checks the layers of the build with `go list`: the service
// binaries link no etcd server, the sextant binary no example, no binary a
// test helper, and internal/ (the code the parts share, its tests included)
// none of the parts built on it.
package layers

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/sextant-mesh/sextant/"

// The binaries Sextant ships (the Dockerfile builds these).
var (
	services = []string{"services/mesh-core", "services/config-center", "services/telemetry-mixer", "services/weight-calculator"}
	sextant  = "cmd/sextant"
)

// The services are etcd clients: etcd's server (raft, bbolt, its gateway) is
// internal/etcdembed's, which only `sextant dev` and the tests import.
func TestServicesLinkNoEtcdServer(t *testing.T) {
	for _, pkg := range services {
		for _, dep := range deps(t, pkg) {
			if strings.HasPrefix(dep, "go.etcd.io/etcd/server/") {
				t.Errorf("%s links %s: the embedded etcd belongs in internal/etcdembed, which services must not import", pkg, dep)
				break
			}
		}
	}
}

// The demo has a command of its own (examples/demo/cmd/demo-dev).
func TestSextantLinksNoExample(t *testing.T) {
	for _, dep := range deps(t, sextant) {
		if strings.HasPrefix(dep, module+"examples/") {
			t.Errorf("%s links %s: examples run as commands of their own", sextant, dep)
		}
	}
}

// Test helpers (internal/testenv, each service's <name>test package) are for
// tests only.
func TestBinariesLinkNoTestHelper(t *testing.T) {
	for _, pkg := range append([]string{sextant}, services...) {
		for _, dep := range deps(t, pkg) {
			if rest, ok := strings.CutPrefix(dep, module); ok && (rest == "internal/testenv" || strings.HasSuffix(rest, "test")) {
				t.Errorf("%s links the test helper %s", pkg, dep)
			}
		}
	}
}

// internal/ is what the parts share, below all of them: no package of it,
// internal/testenv included, and none of their tests imports a service, a
// command or an example, directly or not. Tests that need services are the
// services' own (with their <name>test helpers) or scenarios in tests/.
func TestInternalImportsNoService(t *testing.T) {
	out := goList(t, "-test", "-f", "{{.ImportPath}}|{{join .Deps \" \"}}", "./internal/...")
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		pkg, deps, _ := strings.Cut(line, "|")
		n++
		for _, dep := range strings.Fields(deps) {
			rest, ok := strings.CutPrefix(dep, module)
			if !ok {
				continue
			}
			for _, above := range []string{"services/", "cmd/", "examples/"} {
				if strings.HasPrefix(rest, above) {
					t.Errorf("%s imports %s", pkg, dep)
				}
			}
		}
	}
	if n < 10 {
		t.Fatalf("go list found only %d packages under internal/:\n%s", n, out)
	}
}

// deps lists what the package in dir links: `go list -deps`.
func deps(t *testing.T, dir string) []string {
	t.Helper()
	out := strings.Fields(goList(t, "-deps", "./"+dir))
	if len(out) < 10 {
		t.Fatalf("go list -deps ./%s: %q", dir, out)
	}
	return out
}

func goList(t *testing.T, args ...string) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", append([]string{"list"}, args...)...)
	cmd.Dir = root
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// The examples are what users copy: their packages (not their tests, nor the
// command that runs the demo beside a dev control plane) import the SDK and
// the frameworks, nothing of the control plane's own.
func TestExamplesImportNoControlPlane(t *testing.T) {
	out := goList(t, "-f", "{{.ImportPath}}|{{join .Imports \" \"}}", "./examples/...")
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		pkg, imports, _ := strings.Cut(line, "|")
		if strings.HasSuffix(pkg, "/cmd/demo-dev") {
			continue
		}
		n++
		for _, imp := range strings.Fields(imports) {
			rest, ok := strings.CutPrefix(imp, module)
			if !ok {
				continue
			}
			for _, cp := range []string{"internal/", "services/", "cmd/"} {
				if strings.HasPrefix(rest, cp) {
					t.Errorf("example %s imports %s: users cannot copy it", pkg, imp)
				}
			}
		}
	}
	if n < 2 {
		t.Fatalf("go list found only %d example packages:\n%s", n, out)
	}
}
