// Package helm_test checks the manifests the Sextant Helm chart renders.
//
// `make helm-check` lints the chart and renders it with several values files
// into bin/helm-check/rendered-*.yaml; these tests then decode every rendered
// object strictly (unknown or duplicate fields are errors) into its
// Kubernetes API type and check what a user of the chart relies on: probes,
// resources, ports, references between objects, flags the services really
// have, and what each values file turns on. They need the rendered files and
// fail, naming `make helm-check`, when those are missing or older than the
// chart.
package helm_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/sextant-mesh/sextant/internal/settings"
	"github.com/sextant-mesh/sextant/services/config-center/center"
	"github.com/sextant-mesh/sextant/services/mesh-core/core"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixer"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculator"
)

// renderedDirEnv names the folder of the rendered manifests (make helm-check sets it).
const renderedDirEnv = "HELM_RENDERED_DIR"

// The release `make helm-check` renders: `helm template sextant ... --namespace sextant`.
const (
	namespace = "sextant"
	fullname  = "sextant"
)

// The renders make helm-check writes, by values file.
const (
	renderDefault    = "rendered-default.yaml"     // values.yaml alone
	renderProduction = "rendered-production.yaml"  // -f values-production.yaml
	renderBundled    = "rendered-bundled.yaml"     // -f values-bundled.yaml
	renderOptions    = "rendered-options.yaml"     // -f testdata/values-options.yaml
	renderEtcdAccess = "rendered-etcd-access.yaml" // -f testdata/values-etcd-access.yaml
	renderDashboards = "rendered-dashboards.yaml"  // a copy of the chart with one sample dashboard
)

var allRenders = []string{renderDefault, renderProduction, renderBundled, renderOptions, renderEtcdAccess, renderDashboards}

// component is what the test knows of each Sextant service.
type component struct {
	name string
	// stopTimeout is what services/<name>/main.go gives service.Main: the
	// longest a stop takes after SIGTERM.
	stopTimeout time.Duration
	// behindService: clients reach it through a Service, so a terminating pod
	// must wait (preStop) for its endpoint to be removed.
	behindService bool
	register      func(*flag.FlagSet)
}

var components = []component{
	{"telemetry-mixer", 30 * time.Second, true, func(fs *flag.FlagSet) { c := mixer.DefaultConfig(); c.RegisterFlags(fs) }},
	{"weight-calculator", 20 * time.Second, false, func(fs *flag.FlagSet) { c := calculator.DefaultConfig(); c.RegisterFlags(fs) }},
	{"mesh-core", 30 * time.Second, true, func(fs *flag.FlagSet) { c := core.DefaultConfig(); c.RegisterFlags(fs) }},
	{"config-center", 30 * time.Second, true, func(fs *flag.FlagSet) { c := center.DefaultConfig(); c.RegisterFlags(fs) }},
}

func componentNamed(name string) (component, bool) {
	for _, c := range components {
		if c.name == name {
			return c, true
		}
	}
	return component{}, false
}

// flagSet is a fresh FlagSet of the service, as its main.go builds it.
func (c component) flagSet() *flag.FlagSet {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.register(fs)
	return fs
}

// ---------------------------------------------------------------------------
// Loading and strict decoding.

// object is one rendered manifest, decoded into its API type.
type object struct {
	source     string // file and document number, for messages
	apiVersion string
	kind       string
	name       string
	namespace  string
	labels     map[string]string
	obj        any // *appsv1.Deployment, *corev1.Service, ... or *serviceMonitor
}

func (o *object) String() string {
	return fmt.Sprintf("%s %s/%s (%s)", o.kind, o.namespace, o.name, o.source)
}

// render is the objects of one rendered file.
type render struct {
	file    string
	objects []*object
}

// decoders is every kind the chart may render, by apiVersion and kind. Any
// other kind fails the test.
var decoders = map[string]func() any{
	"apps/v1/Deployment":                     func() any { return &appsv1.Deployment{} },
	"apps/v1/StatefulSet":                    func() any { return &appsv1.StatefulSet{} },
	"v1/Service":                             func() any { return &corev1.Service{} },
	"v1/ConfigMap":                           func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                              func() any { return &corev1.Secret{} },
	"v1/ServiceAccount":                      func() any { return &corev1.ServiceAccount{} },
	"policy/v1/PodDisruptionBudget":          func() any { return &policyv1.PodDisruptionBudget{} },
	"autoscaling/v2/HorizontalPodAutoscaler": func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	// Not in k8s.io/api (a CRD of the Prometheus Operator): decoded strictly
	// into serviceMonitor below, then its required fields checked.
	"monitoring.coreos.com/v1/ServiceMonitor": func() any { return &serviceMonitor{} },
}

// serviceMonitor is the part of monitoring.coreos.com/v1 ServiceMonitor
// (prometheus-operator's CRD) the chart may use, with the CRD's field names;
// a field outside it is an error, as a typo would be.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		JobLabel          string               `json:"jobLabel,omitempty"`
		TargetLabels      []string             `json:"targetLabels,omitempty"`
		PodTargetLabels   []string             `json:"podTargetLabels,omitempty"`
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector struct {
			Any        bool     `json:"any,omitempty"`
			MatchNames []string `json:"matchNames,omitempty"`
		} `json:"namespaceSelector"`
		Endpoints []smEndpoint `json:"endpoints"`
	} `json:"spec"`
}

type smEndpoint struct {
	Port          string `json:"port,omitempty"`
	TargetPort    any    `json:"targetPort,omitempty"`
	Path          string `json:"path,omitempty"`
	Scheme        string `json:"scheme,omitempty"`
	Interval      string `json:"interval,omitempty"`
	ScrapeTimeout string `json:"scrapeTimeout,omitempty"`
	HonorLabels   bool   `json:"honorLabels,omitempty"`
	TLSConfig     *struct {
		InsecureSkipVerify bool   `json:"insecureSkipVerify,omitempty"`
		ServerName         string `json:"serverName,omitempty"`
	} `json:"tlsConfig,omitempty"`
	Relabelings       []map[string]any `json:"relabelings,omitempty"`
	MetricRelabelings []map[string]any `json:"metricRelabelings,omitempty"`
}

func renderedDir() string {
	if d := os.Getenv(renderedDirEnv); d != "" {
		return d
	}
	return filepath.Join("..", "..", "bin", "helm-check") // from deploy/helm
}

var (
	loadOnce sync.Once
	loaded   map[string]*render
	loadErr  error
)

// renders loads and decodes every rendered file once; any failure fails the test.
func renders(t *testing.T) map[string]*render {
	t.Helper()
	loadOnce.Do(func() { loaded, loadErr = loadAll(renderedDir()) })
	if loadErr != nil {
		t.Fatal(loadErr)
	}
	return loaded
}

func get(t *testing.T, file string) *render {
	t.Helper()
	return renders(t)[file]
}

func loadAll(dir string) (map[string]*render, error) {
	const hint = "run `make helm-check`: it renders the chart and runs these tests"
	var oldest time.Time
	for _, f := range allRenders {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			return nil, fmt.Errorf("rendered manifests missing (%v): %s", err, hint)
		}
		if oldest.IsZero() || st.ModTime().Before(oldest) {
			oldest = st.ModTime()
		}
	}
	// Renders older than the chart test an old chart.
	if newest, path := newestChartFile(); newest.After(oldest) {
		return nil, fmt.Errorf("%s changed after the chart was rendered into %s: %s", path, dir, hint)
	}
	out := map[string]*render{}
	var errs []error
	for _, f := range allRenders {
		r, err := load(filepath.Join(dir, f))
		if err != nil {
			errs = append(errs, err)
		}
		out[f] = r
	}
	return out, errors.Join(errs...)
}

// newestChartFile is the newest file among the chart, the values files and the dashboards.
func newestChartFile() (time.Time, string) {
	var newest time.Time
	var path string
	for _, root := range []string{"sextant", "testdata", filepath.Join("..", "dashboards")} {
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			if info, err := d.Info(); err == nil && info.ModTime().After(newest) {
				newest, path = info.ModTime(), p
			}
			return nil
		})
	}
	files, _ := filepath.Glob("values-*.yaml")
	for _, p := range files {
		if info, err := os.Stat(p); err == nil && info.ModTime().After(newest) {
			newest, path = info.ModTime(), p
		}
	}
	return newest, path
}

func load(path string) (*render, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r := &render{file: filepath.Base(path)}
	rd := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var errs []error
	for i := 1; ; i++ {
		doc, err := rd.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", path, i, err)
		}
		o, err := decode(fmt.Sprintf("%s#%d", r.file, i), doc)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if o != nil {
			r.objects = append(r.objects, o)
		}
	}
	if len(r.objects) == 0 {
		errs = append(errs, fmt.Errorf("%s: no objects", path))
	}
	return r, errors.Join(errs...)
}

// decode decodes one YAML document strictly into its type; nil for an empty document.
func decode(source string, doc []byte) (*object, error) {
	js, err := yaml.YAMLToJSONStrict(doc) // duplicate keys are errors
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	if t := bytes.TrimSpace(js); bytes.Equal(t, []byte("null")) || len(t) == 0 {
		return nil, nil
	}
	var tm metav1.TypeMeta
	if err := json.Unmarshal(js, &tm); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	if tm.APIVersion == "" || tm.Kind == "" {
		return nil, fmt.Errorf("%s: no apiVersion or kind", source)
	}
	newObj, ok := decoders[tm.APIVersion+"/"+tm.Kind]
	if !ok {
		return nil, fmt.Errorf("%s: %s %s is not a kind this test knows: add it to decoders", source, tm.APIVersion, tm.Kind)
	}
	obj := newObj()
	// Case-sensitive, like the API server; unknown and duplicate fields are errors.
	strict, err := sigsjson.UnmarshalStrict(js, obj, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", source, tm.Kind, err)
	}
	if len(strict) > 0 {
		return nil, fmt.Errorf("%s: %s: %w", source, tm.Kind, errors.Join(strict...))
	}
	meta := obj.(metav1.Object)
	return &object{
		source: source, apiVersion: tm.APIVersion, kind: tm.Kind,
		name: meta.GetName(), namespace: meta.GetNamespace(), labels: meta.GetLabels(), obj: obj,
	}, nil
}

// ---------------------------------------------------------------------------
// Looking things up in a render.

func (r *render) all(kind string) []*object {
	var out []*object
	for _, o := range r.objects {
		if o.kind == kind {
			out = append(out, o)
		}
	}
	return out
}

func (r *render) find(kind, name string) *object {
	for _, o := range r.objects {
		if o.kind == kind && o.name == name {
			return o
		}
	}
	return nil
}

// workload is a Deployment or StatefulSet as what the checks need.
type workload struct {
	o         *object
	replicas  *int32
	selector  *metav1.LabelSelector
	pod       *corev1.PodTemplateSpec
	component string
	claims    []string // volumeClaimTemplates of a StatefulSet
}

func (r *render) workloads() []workload {
	var out []workload
	for _, o := range r.objects {
		switch x := o.obj.(type) {
		case *appsv1.Deployment:
			out = append(out, workload{o, x.Spec.Replicas, x.Spec.Selector, &x.Spec.Template, o.labels["app.kubernetes.io/component"], nil})
		case *appsv1.StatefulSet:
			var claims []string
			for _, c := range x.Spec.VolumeClaimTemplates {
				claims = append(claims, c.Name)
			}
			out = append(out, workload{o, x.Spec.Replicas, x.Spec.Selector, &x.Spec.Template, o.labels["app.kubernetes.io/component"], claims})
		}
	}
	return out
}

// sextantWorkloads are the workloads of the four services, by component.
func (r *render) sextantWorkloads(t *testing.T) map[string]workload {
	t.Helper()
	out := map[string]workload{}
	for _, w := range r.workloads() {
		if _, ok := componentNamed(w.component); ok {
			if _, dup := out[w.component]; dup {
				t.Errorf("%s: two workloads of %s", r.file, w.component)
			}
			out[w.component] = w
		}
	}
	for _, c := range components {
		if _, ok := out[c.name]; !ok {
			t.Errorf("%s: no workload of %s", r.file, c.name)
		}
	}
	return out
}

// selecting are the workloads whose pods sel selects.
func (r *render) selecting(t *testing.T, sel *metav1.LabelSelector) []workload {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Errorf("selector %v: %v", sel, err)
		return nil
	}
	if s.Empty() {
		t.Errorf("selector %v selects everything", sel)
		return nil
	}
	var out []workload
	for _, w := range r.workloads() {
		if s.Matches(labels.Set(w.pod.Labels)) {
			out = append(out, w)
		}
	}
	return out
}

func containerPort(c *corev1.Container, port string) (int32, bool) {
	for _, p := range c.Ports {
		if p.Name == port {
			return p.ContainerPort, true
		}
	}
	return 0, false
}

func envValue(c *corev1.Container, name string) (corev1.EnvVar, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e, true
		}
	}
	return corev1.EnvVar{}, false
}

// flagArgs parses --name=value arguments.
func flagArgs(t *testing.T, where string, args []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, a := range args {
		name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || !ok {
			t.Errorf("%s: argument %q is not --flag=value", where, a)
			continue
		}
		out[name] = value
	}
	return out
}

// ---------------------------------------------------------------------------
// Checks of every render.

func TestRenderedObjectsDecodeStrictly(t *testing.T) {
	for _, f := range allRenders {
		r := get(t, f)
		kinds := map[string]int{}
		for _, o := range r.objects {
			kinds[o.kind]++
		}
		t.Logf("%s: %d objects %v", f, len(r.objects), kinds)
	}
}

func TestMetadata(t *testing.T) {
	for _, f := range allRenders {
		r := get(t, f)
		seen := map[string]bool{}
		for _, o := range r.objects {
			key := o.kind + "/" + o.namespace + "/" + o.name
			if seen[key] {
				t.Errorf("%s: rendered twice", o)
			}
			seen[key] = true
			if o.namespace != namespace {
				t.Errorf("%s: namespace %q, want the release's %q", o, o.namespace, namespace)
			}
			nameErrs := validation.IsDNS1123Subdomain(o.name)
			switch o.kind {
			case "Service":
				nameErrs = validation.IsDNS1035Label(o.name)
			case "StatefulSet":
				// Its pods carry controller-revision-hash=<name>-<10 chars>, a label value (63 at most).
				if len(o.name) > 52 {
					nameErrs = append(nameErrs, "longer than 52 characters")
				}
			}
			for _, e := range nameErrs {
				t.Errorf("%s: name: %s", o, e)
			}
			checkLabels(t, o.String(), o.labels)
			if o.labels["app.kubernetes.io/instance"] != "sextant" || o.labels["app.kubernetes.io/managed-by"] != "Helm" {
				t.Errorf("%s: no release labels: %v", o, o.labels)
			}
		}
	}
}

func checkLabels(t *testing.T, where string, l map[string]string) {
	t.Helper()
	for k, v := range l {
		for _, e := range validation.IsQualifiedName(k) {
			t.Errorf("%s: label key %q: %s", where, k, e)
		}
		for _, e := range validation.IsValidLabelValue(v) {
			t.Errorf("%s: label %s value %q: %s", where, k, v, e)
		}
	}
}

// TestWorkloads checks every Deployment and StatefulSet: selectors, probes,
// ports, resources, security, and a graceful stop.
func TestWorkloads(t *testing.T) {
	for _, f := range allRenders {
		r := get(t, f)
		r.sextantWorkloads(t)
		for _, w := range r.workloads() {
			where := w.o.String()
			sel, err := metav1.LabelSelectorAsSelector(w.selector)
			if err != nil || sel.Empty() || !sel.Matches(labels.Set(w.pod.Labels)) {
				t.Errorf("%s: selector %v does not select its own pods %v (%v)", where, w.selector, w.pod.Labels, err)
			}
			checkLabels(t, where+" pod", w.pod.Labels)
			for _, other := range r.workloads() {
				if other.o != w.o && sel.Matches(labels.Set(other.pod.Labels)) {
					t.Errorf("%s: selector also selects the pods of %s", where, other.o)
				}
			}
			spec := &w.pod.Spec
			if len(spec.Containers) == 0 {
				t.Errorf("%s: no containers", where)
			}
			for i := range spec.Containers {
				checkContainer(t, where, spec, w.claims, &spec.Containers[i])
			}
			if c, ok := componentNamed(w.component); ok {
				checkSextantPod(t, r, w, c)
			}
		}
	}
}

// checkContainer holds for every container the chart runs, Sextant's or a bundled store's.
func checkContainer(t *testing.T, where string, spec *corev1.PodSpec, claims []string, c *corev1.Container) {
	t.Helper()
	where += " container " + c.Name
	for _, e := range validation.IsDNS1123Label(c.Name) {
		t.Errorf("%s: name: %s", where, e)
	}
	if c.Image == "" || !strings.Contains(c.Image, ":") && !strings.Contains(c.Image, "@") {
		t.Errorf("%s: image %q has no tag or digest", where, c.Image)
	}
	names := map[string]bool{}
	numbers := map[int32]bool{}
	for _, p := range c.Ports {
		for _, e := range validation.IsValidPortName(p.Name) {
			t.Errorf("%s: port name %q: %s", where, p.Name, e)
		}
		if names[p.Name] || numbers[p.ContainerPort] {
			t.Errorf("%s: port %s/%d twice", where, p.Name, p.ContainerPort)
		}
		names[p.Name], numbers[p.ContainerPort] = true, true
	}
	for _, probe := range []struct {
		name string
		p    *corev1.Probe
	}{{"liveness", c.LivenessProbe}, {"readiness", c.ReadinessProbe}} {
		if probe.p == nil {
			t.Errorf("%s: no %s probe", where, probe.name)
			continue
		}
		if g := probe.p.HTTPGet; g != nil {
			declared := false
			for _, p := range c.Ports {
				declared = declared || p.Name == g.Port.StrVal || (g.Port.StrVal == "" && p.ContainerPort == g.Port.IntVal)
			}
			if !declared {
				t.Errorf("%s: %s probe on port %q, which the container does not declare", where, probe.name, g.Port.String())
			}
		} else {
			t.Errorf("%s: %s probe is not an HTTP GET", where, probe.name)
		}
	}
	req, lim := c.Resources.Requests, c.Resources.Limits
	if req.Cpu().IsZero() || req.Memory().IsZero() {
		t.Errorf("%s: no cpu and memory requests: %v", where, req)
	}
	if lim.Memory().IsZero() {
		t.Errorf("%s: no memory limit", where)
	} else if lim.Memory().Cmp(*req.Memory()) < 0 {
		t.Errorf("%s: memory limit %s below its request %s", where, lim.Memory(), req.Memory())
	}
	sc := c.SecurityContext
	nonRoot := (sc != nil && sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) ||
		(spec.SecurityContext != nil && spec.SecurityContext.RunAsNonRoot != nil && *spec.SecurityContext.RunAsNonRoot)
	if !nonRoot {
		t.Errorf("%s: not runAsNonRoot", where)
	}
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: root file system not read-only", where)
	}
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: allowPrivilegeEscalation not false", where)
	}
	// Every $(VAR) in command and args must be a variable of the container.
	for _, a := range append(slices.Clone(c.Command), c.Args...) {
		for _, m := range varRef.FindAllStringSubmatch(a, -1) {
			if _, ok := envValue(c, m[1]); !ok {
				t.Errorf("%s: argument %q refers to $(%s), which is not in env", where, a, m[1])
			}
		}
	}
	mounts := map[string]bool{}
	for _, v := range spec.Volumes {
		mounts[v.Name] = true
	}
	for _, name := range claims {
		mounts[name] = true
	}
	for _, m := range c.VolumeMounts {
		if !mounts[m.Name] {
			t.Errorf("%s: mounts volume %q, which the pod does not have", where, m.Name)
		}
	}
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// checkSextantPod checks one service's pod against what the service is.
func checkSextantPod(t *testing.T, r *render, w workload, comp component) {
	t.Helper()
	where := w.o.String()
	spec := &w.pod.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("%s: %d containers, want 1", where, len(spec.Containers))
	}
	c := &spec.Containers[0]
	if want := "/usr/local/bin/" + comp.name; !slices.Equal(c.Command, []string{want}) {
		t.Errorf("%s: command %v, want [%s] (the binary in the image)", where, c.Command, want)
	}
	// Probes: /healthz and /readyz on the http port.
	for _, p := range []struct {
		name, path string
		probe      *corev1.Probe
	}{{"liveness", "/healthz", c.LivenessProbe}, {"readiness", "/readyz", c.ReadinessProbe}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: %s probe is not an HTTP GET", where, p.name)
			continue
		}
		if p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.String() != "http" {
			t.Errorf("%s: %s probe on %s port %s, want %s on http", where, p.name, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path)
		}
	}
	if _, ok := containerPort(c, "http"); !ok {
		t.Errorf("%s: no port named http (/healthz, /readyz, /metrics)", where)
	}
	// Flags: every argument is a flag of the service with a value it takes.
	fs := comp.flagSet()
	args := flagArgs(t, where, c.Args)
	for name, value := range args {
		if fs.Lookup(name) == nil {
			t.Errorf("%s: --%s is not a flag of %s (it would exit at start)", where, name, comp.name)
			continue
		}
		if !varRef.MatchString(value) {
			if err := fs.Set(name, value); err != nil {
				t.Errorf("%s: --%s=%s: %v", where, name, value, err)
			}
		}
	}
	// Listen addresses: every host, on the ports the container declares.
	for name, value := range args {
		if !strings.HasSuffix(name, "-addr") || name == "advertise-addr" || name == "mesh-core-addr" {
			continue
		}
		host, port, err := net.SplitHostPort(value)
		if err != nil || (host != "0.0.0.0" && host != "::") {
			t.Errorf("%s: --%s=%s does not listen on every address (0.0.0.0)", where, name, value)
			continue
		}
		n, _ := strconv.Atoi(port)
		declared := false
		for _, p := range c.Ports {
			declared = declared || p.ContainerPort == int32(n)
		}
		if !declared {
			t.Errorf("%s: --%s=%s listens on a port the container does not declare", where, name, value)
		}
	}
	wantListen := map[string][]string{
		"telemetry-mixer":   {"http-addr"},
		"weight-calculator": {"kitex-addr", "admin-addr"},
		"mesh-core":         {"http-addr", "kitex-addr"},
		"config-center":     {"http-addr"},
	}[comp.name]
	for _, name := range wantListen {
		if _, ok := args[name]; !ok {
			t.Errorf("%s: no --%s (the default listens on 127.0.0.1 only)", where, name)
		}
	}
	if comp.name == "weight-calculator" {
		if args["id"] != "$(POD_NAME)" || !fieldRef(c, "POD_NAME", "metadata.name") {
			t.Errorf("%s: --id is not the pod name (--id=%q)", where, args["id"])
		}
		if !strings.Contains(args["advertise-addr"], "$(POD_IP)") || !strings.HasSuffix(args["advertise-addr"], ":7702") || !fieldRef(c, "POD_IP", "status.podIP") {
			t.Errorf("%s: --advertise-addr=%q is not the pod IP and the Kitex port", where, args["advertise-addr"])
		}
	}
	// Environment: SEXTANT_* variables set directly are flags of the service.
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "SEXTANT_") {
			checkEnvFlag(t, where, comp, fs, e.Name, "")
		}
		if ref := e.ValueFrom; ref != nil {
			if ref.SecretKeyRef != nil {
				checkSecretKey(t, r, where, ref.SecretKeyRef.Name, ref.SecretKeyRef.Key, ref.SecretKeyRef.Optional)
			}
			if ref.ConfigMapKeyRef != nil {
				checkConfigMapKey(t, r, where, ref.ConfigMapKeyRef.Name, ref.ConfigMapKeyRef.Key)
			}
		}
	}
	checkGC(t, where, c)
	// The settings ConfigMap: every key is a flag, with a value the flag takes.
	var settingsCM *corev1.ConfigMap
	for _, src := range c.EnvFrom {
		if src.ConfigMapRef == nil {
			t.Errorf("%s: envFrom other than a ConfigMap", where)
			continue
		}
		o := r.find("ConfigMap", src.ConfigMapRef.Name)
		if o == nil {
			t.Errorf("%s: envFrom ConfigMap %q is not rendered", where, src.ConfigMapRef.Name)
			continue
		}
		settingsCM = o.obj.(*corev1.ConfigMap)
		for k, v := range settingsCM.Data {
			checkEnvFlag(t, where+" ConfigMap "+o.name, comp, comp.flagSet(), k, v)
		}
	}
	if settingsCM == nil || settingsCM.Data["SEXTANT_ETCD_ENDPOINTS"] == "" {
		t.Errorf("%s: no SEXTANT_ETCD_ENDPOINTS in its settings", where)
	}
	// Volumes refer to what is rendered (or to a Secret the user brings).
	for _, v := range spec.Volumes {
		switch {
		case v.Secret != nil:
			for _, it := range v.Secret.Items {
				checkSecretKey(t, r, where+" volume "+v.Name, v.Secret.SecretName, it.Key, v.Secret.Optional)
			}
			if len(v.Secret.Items) == 0 {
				checkSecretKey(t, r, where+" volume "+v.Name, v.Secret.SecretName, "", v.Secret.Optional)
			}
		case v.ConfigMap != nil:
			if r.find("ConfigMap", v.ConfigMap.Name) == nil {
				t.Errorf("%s: volume %s: ConfigMap %q is not rendered", where, v.Name, v.ConfigMap.Name)
			}
		}
	}
	// A graceful stop: preStop while endpoints drain, then the service's own stop.
	var preStop time.Duration
	if lc := c.Lifecycle; lc != nil && lc.PreStop != nil {
		if lc.PreStop.Sleep == nil {
			t.Errorf("%s: preStop is not a sleep (the image has no shell)", where)
		} else {
			preStop = time.Duration(lc.PreStop.Sleep.Seconds) * time.Second
		}
	}
	if comp.behindService && preStop <= 0 {
		t.Errorf("%s: no preStop sleep: clients reach it through a Service and would hit it while its endpoint drains", where)
	}
	grace := 30 * time.Second
	if spec.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
	}
	if grace < preStop+comp.stopTimeout {
		t.Errorf("%s: terminationGracePeriodSeconds %v is below preStop %v + the service's stop timeout %v: it could be killed mid-stop", where, grace, preStop, comp.stopTimeout)
	}
	// Replicas spread over nodes.
	if a := spec.Affinity; a == nil || a.PodAntiAffinity == nil || !spreadByHostname(a.PodAntiAffinity, w.pod.Labels) {
		t.Errorf("%s: no preferred pod anti-affinity by kubernetes.io/hostname", where)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("%s: mounts a service account token; the services do not use the API", where)
	}
	if spec.EnableServiceLinks == nil || *spec.EnableServiceLinks {
		t.Errorf("%s: service links on: their *_SERVICE_HOST variables may be SEXTANT_* ones", where)
	}
}

// checkGC: GOGC and GOMEMLIMIT, when set, are values the Go runtime takes,
// GOMEMLIMIT below the container's memory limit, and no variable twice.
func checkGC(t *testing.T, where string, c *corev1.Container) {
	t.Helper()
	seen := map[string]bool{}
	for _, e := range c.Env {
		if seen[e.Name] {
			t.Errorf("%s: %s set twice", where, e.Name)
		}
		seen[e.Name] = true
	}
	if e, ok := envValue(c, "GOGC"); ok {
		if n, err := strconv.Atoi(e.Value); e.Value != "off" && (err != nil || n < 1) {
			t.Errorf("%s: GOGC=%q is neither a percentage nor off", where, e.Value)
		}
	}
	if e, ok := envValue(c, "GOMEMLIMIT"); ok {
		n, err := goMemLimit(e.Value)
		if err != nil {
			t.Errorf("%s: GOMEMLIMIT=%q: %v", where, e.Value, err)
		} else if lim := c.Resources.Limits.Memory(); !lim.IsZero() && n >= lim.Value() {
			t.Errorf("%s: GOMEMLIMIT=%s is not below the memory limit %s", where, e.Value, lim)
		}
	}
}

// goMemLimit reads GOMEMLIMIT as the Go runtime does: bytes, or a number of
// B, KiB, MiB, GiB or TiB.
func goMemLimit(v string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if n, ok := strings.CutSuffix(v, u.suffix); ok {
			v, mult = n, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("not a size the Go runtime reads")
	}
	return n * mult, nil
}

func fieldRef(c *corev1.Container, env, path string) bool {
	e, ok := envValue(c, env)
	return ok && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == path
}

func spreadByHostname(a *corev1.PodAntiAffinity, podLabels map[string]string) bool {
	for _, term := range a.PreferredDuringSchedulingIgnoredDuringExecution {
		sel, err := metav1.LabelSelectorAsSelector(term.PodAffinityTerm.LabelSelector)
		if err == nil && term.PodAffinityTerm.TopologyKey == "kubernetes.io/hostname" && !sel.Empty() && sel.Matches(labels.Set(podLabels)) {
			return true
		}
	}
	return false
}

// checkEnvFlag checks that variable name sets a flag of the service and, when
// value is not empty, that the flag takes it.
func checkEnvFlag(t *testing.T, where string, comp component, fs *flag.FlagSet, name, value string) {
	t.Helper()
	var flagName string
	fs.VisitAll(func(f *flag.Flag) {
		if settings.EnvName(f.Name) == name {
			flagName = f.Name
		}
	})
	switch {
	case flagName == "":
		t.Errorf("%s: %s is not the variable of any flag of %s", where, name, comp.name)
	case value != "":
		if err := fs.Set(flagName, value); err != nil {
			t.Errorf("%s: %s=%q: --%s does not take it: %v", where, name, value, flagName, err)
		}
	}
}

// externalSecrets are Secrets a values file expects the user to bring.
var externalSecrets = map[string]bool{
	"sextant-api-tokens": true, "etcd-client-tls": true, "sextant-config-center-tls": true,
	"sextant-influxdb-credentials": true, "etcd-credentials": true,
	"sextant-peer-east": true, "sextant-peers": true, // the tokens peers issued (meshCore.peering)
}

func checkSecretKey(t *testing.T, r *render, where, name, key string, optional *bool) {
	t.Helper()
	o := r.find("Secret", name)
	if o == nil {
		if !externalSecrets[name] {
			t.Errorf("%s: Secret %q is neither rendered nor one the values file brings", where, name)
		}
		return
	}
	s := o.obj.(*corev1.Secret)
	_, inData := s.Data[key]
	_, inString := s.StringData[key]
	if key != "" && !inData && !inString && (optional == nil || !*optional) {
		t.Errorf("%s: Secret %s has no key %q", where, name, key)
	}
}

func checkConfigMapKey(t *testing.T, r *render, where, name, key string) {
	t.Helper()
	o := r.find("ConfigMap", name)
	if o == nil {
		t.Errorf("%s: ConfigMap %q is not rendered", where, name)
		return
	}
	if _, ok := o.obj.(*corev1.ConfigMap).Data[key]; !ok {
		t.Errorf("%s: ConfigMap %s has no key %q", where, name, key)
	}
}

// TestServices checks that every Service selects a workload that has the
// ports it targets, and that the calculators find mesh-core's Kitex port.
func TestServices(t *testing.T) {
	for _, f := range allRenders {
		r := get(t, f)
		for _, o := range r.all("Service") {
			svc := o.obj.(*corev1.Service)
			ws := r.selecting(t, &metav1.LabelSelector{MatchLabels: svc.Spec.Selector})
			if len(ws) != 1 {
				t.Errorf("%s: selects %d workloads, want 1", o, len(ws))
				continue
			}
			c := &ws[0].pod.Spec.Containers[0]
			for _, p := range svc.Spec.Ports {
				for _, e := range validation.IsValidPortName(p.Name) {
					t.Errorf("%s: port name %q: %s", o, p.Name, e)
				}
				if p.TargetPort.StrVal == "" {
					t.Errorf("%s: port %s targets a number; name the container port", o, p.Name)
				} else if _, ok := containerPort(c, p.TargetPort.StrVal); !ok {
					t.Errorf("%s: port %s targets %q, which %s does not declare", o, p.Name, p.TargetPort.StrVal, ws[0].o)
				}
			}
			switch svc.Spec.Type {
			case corev1.ServiceTypeClusterIP, "": // "" is ClusterIP
			case corev1.ServiceTypeLoadBalancer, corev1.ServiceTypeNodePort:
				if f == renderDefault {
					t.Errorf("%s: type %s, want ClusterIP by default", o, svc.Spec.Type)
				}
			default:
				t.Errorf("%s: type %q", o, svc.Spec.Type)
			}
		}
		// The calculators' --mesh-core-addr: mesh-core's Kitex Service, in DNS form.
		w := r.sextantWorkloads(t)["weight-calculator"]
		if w.o == nil {
			continue
		}
		cm := r.find("ConfigMap", w.pod.Spec.Containers[0].EnvFrom[0].ConfigMapRef.Name)
		addr := cm.obj.(*corev1.ConfigMap).Data["SEXTANT_MESH_CORE_ADDR"]
		host, port, _ := net.SplitHostPort(addr)
		name, ns, _ := strings.Cut(host, ".")
		svc := r.find("Service", name)
		if svc == nil || ns != namespace+".svc" {
			t.Errorf("%s: SEXTANT_MESH_CORE_ADDR=%q is not a rendered Service's DNS name", f, addr)
			continue
		}
		ok := false
		for _, p := range svc.obj.(*corev1.Service).Spec.Ports {
			ok = ok || (strconv.Itoa(int(p.Port)) == port && p.TargetPort.StrVal == "kitex")
		}
		sel := r.selecting(t, &metav1.LabelSelector{MatchLabels: svc.obj.(*corev1.Service).Spec.Selector})
		if !ok || len(sel) != 1 || sel[0].component != "mesh-core" {
			t.Errorf("%s: SEXTANT_MESH_CORE_ADDR=%q is not mesh-core's Kitex port", f, addr)
		}
	}
}

func TestPodDisruptionBudgets(t *testing.T) {
	for _, f := range allRenders {
		r := get(t, f)
		covered := map[string]bool{}
		for _, o := range r.all("PodDisruptionBudget") {
			pdb := o.obj.(*policyv1.PodDisruptionBudget)
			if (pdb.Spec.MinAvailable == nil) == (pdb.Spec.MaxUnavailable == nil) {
				t.Errorf("%s: needs exactly one of minAvailable and maxUnavailable", o)
			}
			ws := r.selecting(t, pdb.Spec.Selector)
			if len(ws) != 1 {
				t.Errorf("%s: selects %d workloads, want 1", o, len(ws))
				continue
			}
			covered[ws[0].component] = true
		}
		for _, c := range components {
			if !covered[c.name] {
				t.Errorf("%s: no PodDisruptionBudget for %s", f, c.name)
			}
		}
	}
}

func TestAutoscalers(t *testing.T) {
	for _, f := range allRenders {
		r := get(t, f)
		for _, o := range r.all("HorizontalPodAutoscaler") {
			hpa := o.obj.(*autoscalingv2.HorizontalPodAutoscaler)
			ref := hpa.Spec.ScaleTargetRef
			target := r.find(ref.Kind, ref.Name)
			if ref.APIVersion != "apps/v1" || target == nil {
				t.Errorf("%s: scales %s %s/%s, which is not rendered", o, ref.APIVersion, ref.Kind, ref.Name)
				continue
			}
			if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 1 || *hpa.Spec.MinReplicas > hpa.Spec.MaxReplicas {
				t.Errorf("%s: replicas %v..%d", o, hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas)
			}
			if len(hpa.Spec.Metrics) == 0 {
				t.Errorf("%s: no metrics", o)
			}
			dep := target.obj.(*appsv1.Deployment)
			if dep.Spec.Replicas != nil {
				t.Errorf("%s: %s sets replicas: every helm upgrade would undo the autoscaler", o, target)
			}
			for _, m := range hpa.Spec.Metrics {
				if m.Resource == nil {
					continue
				}
				for _, c := range dep.Spec.Template.Spec.Containers {
					if q, ok := c.Resources.Requests[m.Resource.Name]; !ok || q.IsZero() {
						t.Errorf("%s: scales on %s utilization but %s requests none", o, m.Resource.Name, c.Name)
					}
				}
			}
			if comp := target.labels["app.kubernetes.io/component"]; comp != "telemetry-mixer" && comp != "mesh-core" {
				t.Errorf("%s: scales %s; only the mixer and mesh-core scale by load", o, comp)
			}
		}
	}
}

func TestServiceMonitors(t *testing.T) {
	for _, f := range allRenders {
		r := get(t, f)
		for _, o := range r.all("ServiceMonitor") {
			sm := o.obj.(*serviceMonitor)
			if len(sm.Spec.Endpoints) == 0 {
				t.Errorf("%s: no endpoints", o)
			}
			sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
			if err != nil || sel.Empty() {
				t.Errorf("%s: selector %v selects everything or nothing (%v)", o, sm.Spec.Selector, err)
				continue
			}
			if !slices.Contains(sm.Spec.NamespaceSelector.MatchNames, namespace) {
				t.Errorf("%s: namespaceSelector %v leaves out the release's namespace", o, sm.Spec.NamespaceSelector)
			}
			var svcs []*corev1.Service
			for _, so := range r.all("Service") {
				if sel.Matches(labels.Set(so.labels)) {
					svcs = append(svcs, so.obj.(*corev1.Service))
				}
			}
			if len(svcs) == 0 {
				t.Errorf("%s: selects no Service", o)
			}
			for _, ep := range sm.Spec.Endpoints {
				if ep.Port == "" || ep.Path != "/metrics" {
					t.Errorf("%s: endpoint %+v: want a named port and /metrics", o, ep)
				}
				for _, s := range svcs {
					found := false
					for _, p := range s.Spec.Ports {
						found = found || p.Name == ep.Port
					}
					if !found {
						t.Errorf("%s: Service %s has no port %q", o, s.Name, ep.Port)
					}
				}
				interval, err1 := time.ParseDuration(ep.Interval)
				timeout, err2 := time.ParseDuration(ep.ScrapeTimeout)
				if err1 != nil || err2 != nil || timeout > interval {
					t.Errorf("%s: interval %q, scrapeTimeout %q: Prometheus needs the timeout within the interval", o, ep.Interval, ep.ScrapeTimeout)
				}
				if ep.Scheme != "" && ep.Scheme != "http" && ep.Scheme != "https" {
					t.Errorf("%s: scheme %q", o, ep.Scheme)
				}
			}
		}
	}
}

// ---------------------------------------------------------------------------
// What each values file turns on.

func TestDefaultValues(t *testing.T) {
	r := get(t, renderDefault)
	for _, kind := range []string{"HorizontalPodAutoscaler", "ServiceMonitor", "StatefulSet"} {
		if n := len(r.all(kind)); n > 0 {
			t.Errorf("default values render %d %s, want none (no autoscaling, no ServiceMonitor, etcd and InfluxDB not bundled)", n, kind)
		}
	}
	for name, w := range r.sextantWorkloads(t) {
		if w.o.kind != "Deployment" {
			t.Errorf("%s is a %s, want a Deployment", name, w.o.kind)
		}
		cm := r.find("ConfigMap", w.pod.Spec.Containers[0].EnvFrom[0].ConfigMapRef.Name).obj.(*corev1.ConfigMap)
		if got := cm.Data["SEXTANT_ETCD_ENDPOINTS"]; got != "etcd:2379" {
			t.Errorf("%s: SEXTANT_ETCD_ENDPOINTS=%q, want the default etcd.endpoints etcd:2379", name, got)
		}
		for k := range cm.Data {
			if strings.HasPrefix(k, "SEXTANT_INFLUX_") {
				t.Errorf("%s: %s set while InfluxDB is off", name, k)
			}
		}
	}
	// GC defaults: GOGC 100, GOMEMLIMIT 90 % of the memory limit.
	for name, w := range r.sextantWorkloads(t) {
		c := &w.pod.Spec.Containers[0]
		if e, _ := envValue(c, "GOGC"); e.Value != "100" {
			t.Errorf("%s: GOGC=%q, want 100", name, e.Value)
		}
		want := fmt.Sprintf("%dMiB", c.Resources.Limits.Memory().Value()*90/100>>20)
		if e, _ := envValue(c, "GOMEMLIMIT"); e.Value != want {
			t.Errorf("%s: GOMEMLIMIT=%q, want %s (90 %% of %s)", name, e.Value, want, c.Resources.Limits.Memory())
		}
	}
	s := r.find("Secret", fullname+"-auth")
	if s == nil || len(s.obj.(*corev1.Secret).Data["admin-token"]) < 32 {
		t.Errorf("default values: no Secret %s-auth with a generated admin-token", fullname)
	}
}

func TestProductionValues(t *testing.T) {
	r := get(t, renderProduction)
	scaled := map[string]bool{}
	for _, o := range r.all("HorizontalPodAutoscaler") {
		scaled[o.labels["app.kubernetes.io/component"]] = true
	}
	if !scaled["telemetry-mixer"] || !scaled["mesh-core"] {
		t.Errorf("production values: HorizontalPodAutoscalers for %v, want telemetry-mixer and mesh-core", scaled)
	}
	monitored := map[string]bool{}
	for _, o := range r.all("ServiceMonitor") {
		monitored[o.labels["app.kubernetes.io/component"]] = true
	}
	for name, w := range r.sextantWorkloads(t) {
		if !monitored[name] {
			t.Errorf("production values: no ServiceMonitor for %s", name)
		}
		if !scaled[name] && (w.replicas == nil || *w.replicas < 2) {
			t.Errorf("production values: %s runs %v replicas, want several", name, w.replicas)
		}
		lim := w.pod.Spec.Containers[0].Resources.Limits
		if lim.Cpu().IsZero() || lim.Memory().IsZero() {
			t.Errorf("production values: %s has no cpu and memory limits", name)
		}
		c := &w.pod.Spec.Containers[0]
		cm := r.find("ConfigMap", c.EnvFrom[0].ConfigMapRef.Name).obj.(*corev1.ConfigMap)
		if cm.Data["SEXTANT_INFLUX_URL"] == "" || cm.Data["SEXTANT_INFLUX_DB"] == "" {
			t.Errorf("production values: %s writes no time series (no SEXTANT_INFLUX_URL or _DB)", name)
		}
		if e, ok := envValue(c, "SEXTANT_INFLUX_TOKEN"); !ok || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			t.Errorf("production values: %s: SEXTANT_INFLUX_TOKEN does not come from a Secret", name)
		}
	}
	if len(r.all("StatefulSet")) != 1 || r.find("StatefulSet", fullname+"-weight-calculator") == nil {
		t.Errorf("production values: want the calculators as the only StatefulSet (no bundled stores)")
	}
}

func TestBundledValues(t *testing.T) {
	r := get(t, renderBundled)
	etcd := r.find("StatefulSet", fullname+"-etcd")
	influx := r.find("StatefulSet", fullname+"-influxdb")
	if etcd == nil || influx == nil {
		t.Fatalf("bundled values: want StatefulSets %s-etcd and %s-influxdb", fullname, fullname)
	}
	ec := etcd.obj.(*appsv1.StatefulSet).Spec.Template.Spec.Containers[0]
	if !strings.HasPrefix(ec.Image, "gcr.io/etcd-development/etcd:v3.6.") && !strings.HasPrefix(ec.Image, "quay.io/coreos/etcd:v3.5.") {
		t.Errorf("bundled etcd image %q", ec.Image)
	}
	ic := influx.obj.(*appsv1.StatefulSet).Spec.Template.Spec.Containers[0]
	if ic.Image != "influxdb:1.8.10" {
		t.Errorf("bundled InfluxDB image %q, want influxdb:1.8.10", ic.Image)
	}
	if e, ok := envValue(&ic, "INFLUXDB_HTTP_FLUX_ENABLED"); !ok || e.Value != "true" {
		t.Errorf("bundled InfluxDB: Flux not enabled")
	}
	headless := etcd.obj.(*appsv1.StatefulSet).Spec.ServiceName
	hs := r.find("Service", headless)
	if hs == nil || hs.obj.(*corev1.Service).Spec.ClusterIP != "None" || !hs.obj.(*corev1.Service).Spec.PublishNotReadyAddresses {
		t.Errorf("bundled etcd: %q is not a headless Service publishing members before they are ready", headless)
	}
	for name, w := range r.sextantWorkloads(t) {
		cm := r.find("ConfigMap", w.pod.Spec.Containers[0].EnvFrom[0].ConfigMapRef.Name).obj.(*corev1.ConfigMap)
		for _, ep := range strings.Split(cm.Data["SEXTANT_ETCD_ENDPOINTS"], ",") {
			if !strings.HasPrefix(ep, fullname+"-etcd-") || !strings.HasSuffix(ep, "."+headless+"."+namespace+".svc:2379") {
				t.Errorf("%s: etcd endpoint %q is not a bundled member", name, ep)
			}
		}
		if got, want := cm.Data["SEXTANT_INFLUX_URL"], "http://"+fullname+"-influxdb."+namespace+".svc:8086"; got != want {
			t.Errorf("%s: SEXTANT_INFLUX_URL=%q, want %q", name, got, want)
		}
		if cm.Data["SEXTANT_INFLUX_DB"] == "" {
			t.Errorf("%s: no SEXTANT_INFLUX_DB", name)
		}
	}
}

// TestDashboards checks the Grafana dashboards ConfigMap: the sample of the
// dashboards render, and in the default render exactly deploy/dashboards/*.json
// (through the chart's dashboards symlink).
func TestDashboards(t *testing.T) {
	sample := dashboardsConfigMap(t, get(t, renderDashboards))
	if sample == nil {
		t.Fatalf("%s: no ConfigMap labelled grafana_dashboard=1", renderDashboards)
	}
	if !json.Valid([]byte(sample.Data["helm-check-sample.json"])) {
		t.Errorf("%s: helm-check-sample.json missing or not JSON: %q", renderDashboards, sample.Data["helm-check-sample.json"])
	}

	files, err := filepath.Glob(filepath.Join("..", "dashboards", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	cm := dashboardsConfigMap(t, get(t, renderDefault))
	if len(files) == 0 {
		if cm != nil {
			t.Errorf("%s: a dashboards ConfigMap though deploy/dashboards has no JSON file", renderDefault)
		}
		return
	}
	if cm == nil {
		t.Fatalf("%s: no dashboards ConfigMap though deploy/dashboards has %d JSON files", renderDefault, len(files))
	}
	var want []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(f)
		want = append(want, name)
		if !json.Valid(b) {
			t.Errorf("deploy/dashboards/%s is not JSON", name)
		}
		if cm.Data[name] != string(b) {
			t.Errorf("%s: dashboards ConfigMap key %s differs from deploy/dashboards/%s", renderDefault, name, name)
		}
	}
	var got []string
	for k := range cm.Data {
		got = append(got, k)
	}
	sort.Strings(got)
	if !slices.Equal(got, want) {
		t.Errorf("%s: dashboards %v, want %v", renderDefault, got, want)
	}
}

func dashboardsConfigMap(t *testing.T, r *render) *corev1.ConfigMap {
	t.Helper()
	var out *corev1.ConfigMap
	for _, o := range r.all("ConfigMap") {
		if o.labels["grafana_dashboard"] == "1" {
			if out != nil {
				t.Errorf("%s: two dashboards ConfigMaps", r.file)
			}
			out = o.obj.(*corev1.ConfigMap)
			for k := range out.Data {
				for _, e := range validation.IsConfigMapKey(k) {
					t.Errorf("%s: dashboard file name %q: %s", r.file, k, e)
				}
			}
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// The values schema against the services' flags.

// TestSchemaSettingsAreFlags checks that every flag values.schema.json lets
// users set under <service>.settings is a flag of that service, and lists
// the flags users cannot set there yet (they can through extraEnv).
func TestSchemaSettingsAreFlags(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("sextant", "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Defs map[string]struct {
			Properties map[string]json.RawMessage `json:"properties"`
		} `json:"$defs"`
	}
	if err := json.Unmarshal(b, &schema); err != nil {
		t.Fatal(err)
	}
	// Flags the chart sets itself, as arguments or in the settings ConfigMap.
	chartSet := map[string]bool{
		"http-addr": true, "kitex-addr": true, "poll-addr": true, "xds-addr": true, "admin-addr": true, "advertise-addr": true, "id": true,
		"etcd-endpoints": true, "etcd-prefix": true, "mesh-core-addr": true,
		"etcd-ca-file": true, "etcd-cert-file": true, "etcd-key-file": true,
		"etcd-username": true, "etcd-password": true, "etcd-password-file": true,
		"tokens-file": true, "admin-token": true, "tls-cert": true, "tls-key": true,
		"influx-url": true, "influx-db": true, "influx-rp": true, "influx-token": true,
	}
	keys := map[string]string{
		"telemetry-mixer": "telemetryMixer", "weight-calculator": "weightCalculator",
		"mesh-core": "meshCore", "config-center": "configCenter",
	}
	for _, c := range components {
		def, ok := schema.Defs["settings-"+keys[c.name]]
		if !ok {
			t.Errorf("values.schema.json: no $defs/settings-%s", keys[c.name])
			continue
		}
		fs := c.flagSet()
		for name := range def.Properties {
			switch {
			case fs.Lookup(name) == nil:
				t.Errorf("values.schema.json: %s.settings allows %q, which is not a flag of %s", keys[c.name], name, c.name)
			case chartSet[name]:
				t.Errorf("values.schema.json: %s.settings allows %q, which the chart sets itself", keys[c.name], name)
			}
		}
		var missing []string
		fs.VisitAll(func(f *flag.Flag) {
			if _, ok := def.Properties[f.Name]; !ok && !chartSet[f.Name] {
				missing = append(missing, f.Name)
			}
		})
		if len(missing) > 0 {
			t.Logf("%s flags not in values.schema.json's %s.settings yet (set them with extraEnv): %v", c.name, keys[c.name], missing)
		}
	}
}

// TestOptionValues checks the options testdata/values-options.yaml turns on:
// TLS of the config-center API, an existing tokens Secret, three bundled etcd
// members, a calculator StatefulSet, IPv6 addresses.
func TestOptionValues(t *testing.T) {
	r := get(t, renderOptions)
	ws := r.sextantWorkloads(t)
	for name, w := range ws {
		c := &w.pod.Spec.Containers[0]
		cm := r.find("ConfigMap", c.EnvFrom[0].ConfigMapRef.Name).obj.(*corev1.ConfigMap)
		if cm.Data["SEXTANT_INFLUX_URL"] != "http://influxdb.monitoring.svc:8086" {
			t.Errorf("%s: SEXTANT_INFLUX_URL=%q, want influxdb.url", name, cm.Data["SEXTANT_INFLUX_URL"])
		}
		for _, a := range c.Args {
			if strings.HasSuffix(strings.SplitN(a, "=", 2)[0], "-addr") && strings.Contains(a, "0.0.0.0") {
				t.Errorf("%s: %s with listenHost [::]", name, a)
			}
		}
	}
	// config-center over TLS: certificate flags on the mounted Secret, HTTPS probes and scrapes.
	cc := &ws["config-center"].pod.Spec.Containers[0]
	args := flagArgs(t, "config-center", cc.Args)
	if args["tls-cert"] == "" || args["tls-key"] == "" || args["tokens-file"] == "" {
		t.Errorf("config-center: args %v lack --tls-cert, --tls-key or --tokens-file", cc.Args)
	}
	for _, p := range []*corev1.Probe{cc.LivenessProbe, cc.ReadinessProbe} {
		if p.HTTPGet.Scheme != corev1.URISchemeHTTPS {
			t.Errorf("config-center: probe scheme %q with TLS on", p.HTTPGet.Scheme)
		}
	}
	if sm := r.find("ServiceMonitor", fullname+"-config-center"); sm == nil || sm.obj.(*serviceMonitor).Spec.Endpoints[0].Scheme != "https" {
		t.Errorf("config-center: no ServiceMonitor scraping over https")
	}
	// Service-account tokens: the --oidc-* flags from configCenter.oidc, the
	// cluster's CA from its ConfigMap (projected, as Kubernetes mounts it),
	// on the config-center only.
	if args["oidc-issuer"] != "https://kubernetes.default.svc.cluster.local" || args["oidc-jwks-url"] != "https://kubernetes.default.svc/openid/v1/jwks" ||
		args["oidc-audience"] != "sextant" || args["oidc-ca-file"] != "/etc/sextant/oidc/ca.crt" {
		t.Errorf("config-center: args %v lack the --oidc-* flags of configCenter.oidc", cc.Args)
	}
	var projected bool
	for _, v := range ws["config-center"].pod.Spec.Volumes {
		if v.Name == "oidc-ca" && v.Projected != nil && len(v.Projected.Sources) == 1 && v.Projected.Sources[0].ConfigMap != nil &&
			v.Projected.Sources[0].ConfigMap.Name == "kube-root-ca.crt" {
			projected = true
		}
	}
	mountedCA := false
	for _, m := range cc.VolumeMounts {
		mountedCA = mountedCA || (m.Name == "oidc-ca" && m.MountPath == "/etc/sextant/oidc")
	}
	if !projected || !mountedCA {
		t.Errorf("config-center: the cluster's CA (kube-root-ca.crt) is not mounted at /etc/sextant/oidc")
	}
	for name, w := range ws {
		if name == "config-center" {
			continue
		}
		for _, a := range w.pod.Spec.Containers[0].Args {
			if strings.HasPrefix(a, "--oidc-") {
				t.Errorf("%s: %s: only the config-center takes service-account tokens", name, a)
			}
		}
	}
	// The certificate authority's key reaches every service, from the
	// Secret the chart makes: the Kitex hops use mTLS, the HTTP APIs stay plain.
	if r.find("Secret", fullname+"-pki") == nil {
		t.Errorf("pki.enabled: no Secret %s-pki", fullname)
	}
	for name, w := range ws {
		c := &w.pod.Spec.Containers[0]
		args := flagArgs(t, name, c.Args)
		if args["ca-key-file"] != "/etc/sextant/pki/ca.key" || args["trust-domain"] != "mesh.example" || args["tls-http"] != "false" {
			t.Errorf("%s: args %v lack the CA key file, the trust domain or --tls-http=false", name, c.Args)
		}
		mounted := false
		for _, m := range c.VolumeMounts {
			mounted = mounted || (m.Name == "pki" && m.MountPath == "/etc/sextant/pki")
		}
		if !mounted {
			t.Errorf("%s: the CA key is not mounted", name)
		}
	}
	// Every service verifies operators' tokens: the admin token and the
	// tokens file reach each of them.
	for name, w := range ws {
		c := &w.pod.Spec.Containers[0]
		if flagArgs(t, name, c.Args)["tokens-file"] == "" {
			t.Errorf("%s: no --tokens-file", name)
		}
		found := false
		for _, e := range c.Env {
			found = found || (e.Name == "SEXTANT_ADMIN_TOKEN" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil)
		}
		if !found {
			t.Errorf("%s: no SEXTANT_ADMIN_TOKEN from the auth Secret", name)
		}
	}
	if r.find("Secret", fullname+"-auth") != nil {
		t.Errorf("auth.existingSecret set, yet the chart renders its own Secret")
	}
	// GC as the options file sets it.
	for _, want := range []struct{ component, gogc, memLimit string }{
		{"telemetry-mixer", "off", "700MiB"}, // set by hand
		{"weight-calculator", "", ""},        // turned off
		{"mesh-core", "100", "512MiB"},       // GOMEMLIMIT from extraEnv
		{"config-center", "100", "460MiB"},   // the defaults: 90 % of 512Mi
	} {
		c := &ws[want.component].pod.Spec.Containers[0]
		gogc, _ := envValue(c, "GOGC")
		limit, _ := envValue(c, "GOMEMLIMIT")
		if gogc.Value != want.gogc || limit.Value != want.memLimit {
			t.Errorf("%s: GOGC=%q GOMEMLIMIT=%q, want %q and %q", want.component, gogc.Value, limit.Value, want.gogc, want.memLimit)
		}
	}
	// Multi-cluster: mesh-core exports and imports as meshCore.peering
	// says; each peer's token is mounted from its Secret where
	// --peer-token-file names it.
	mc := &ws["mesh-core"].pod.Spec.Containers[0]
	mcData := r.find("ConfigMap", mc.EnvFrom[0].ConfigMapRef.Name).obj.(*corev1.ConfigMap).Data
	for k, want := range map[string]string{
		"SEXTANT_EXPORT":          "comment-svc,pay-svc",
		"SEXTANT_PEER":            "east=http://sextant-mesh-core.sextant.svc.east.example:7703,west=https://mesh-core.west.example:7703",
		"SEXTANT_PEER_TOKEN_FILE": "east=/etc/sextant/peers/east/token,west=/etc/sextant/peers/west/token",
		"SEXTANT_PEER_TTL":        "2m",
		"SEXTANT_PEER_WAIT":       "20s",
	} {
		if mcData[k] != want {
			t.Errorf("mesh-core: %s=%q, want %q", k, mcData[k], want)
		}
	}
	for _, peer := range []struct{ name, secret, key string }{{"east", "sextant-peer-east", "token"}, {"west", "sextant-peers", "west"}} {
		mounted, fromSecret := false, false
		for _, m := range mc.VolumeMounts {
			mounted = mounted || (m.Name == "peer-"+peer.name && m.MountPath == "/etc/sextant/peers/"+peer.name && m.ReadOnly)
		}
		for _, v := range ws["mesh-core"].pod.Spec.Volumes {
			if v.Name == "peer-"+peer.name && v.Secret != nil && v.Secret.SecretName == peer.secret {
				fromSecret = len(v.Secret.Items) == 1 && v.Secret.Items[0].Key == peer.key && v.Secret.Items[0].Path == "token"
			}
		}
		if !mounted || !fromSecret {
			t.Errorf("mesh-core: peer %s's token: mounted %v, from Secret %s key %s %v", peer.name, mounted, peer.secret, peer.key, fromSecret)
		}
	}
	for name, w := range ws {
		if name == "mesh-core" {
			continue
		}
		for _, v := range w.pod.Spec.Volumes {
			if strings.HasPrefix(v.Name, "peer-") {
				t.Errorf("%s: mounts peer token %s; only mesh-core peers", name, v.Name)
			}
		}
	}
	// The calculators: a StatefulSet on its headless Service.
	calc := ws["weight-calculator"]
	if calc.o.kind != "StatefulSet" || calc.o.obj.(*appsv1.StatefulSet).Spec.ServiceName != fullname+"-weight-calculator" {
		t.Errorf("weight-calculator: want a StatefulSet on Service %s-weight-calculator", fullname)
	}
	// Three etcd members that name each other.
	etcd := r.find("StatefulSet", fullname+"-etcd")
	if etcd == nil {
		t.Fatalf("no bundled etcd")
	}
	sts := etcd.obj.(*appsv1.StatefulSet)
	var cluster string
	for _, a := range sts.Spec.Template.Spec.Containers[0].Args {
		if v, ok := strings.CutPrefix(a, "--initial-cluster="); ok {
			cluster = v
		}
	}
	members := strings.Split(cluster, ",")
	if sts.Spec.Replicas == nil || int(*sts.Spec.Replicas) != len(members) || len(members) != 3 {
		t.Errorf("bundled etcd: %v replicas, --initial-cluster=%s", sts.Spec.Replicas, cluster)
	}
	for i, m := range members {
		want := fmt.Sprintf("%s-etcd-%d=http://%s-etcd-%d.%s.%s.svc:2380", fullname, i, fullname, i, sts.Spec.ServiceName, namespace)
		if m != want {
			t.Errorf("bundled etcd member %d: %q, want %q", i, m, want)
		}
	}
	if sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("bundled etcd: pods start one by one; members wait for a quorum that never comes")
	}
	if r.find("PodDisruptionBudget", fullname+"-etcd") == nil {
		t.Errorf("bundled etcd of 3: no PodDisruptionBudget")
	}
}

// TestEtcdAccessValues checks testdata/values-etcd-access.yaml: an etcd of
// one's own over TLS with client certificates (the Secret mounted, the files
// named by --etcd-ca-file, --etcd-cert-file and --etcd-key-file) and etcd's
// auth (--etcd-username and --etcd-password from the Secret's keys); the
// default values set none of these.
func TestEtcdAccessValues(t *testing.T) {
	r := get(t, renderEtcdAccess)
	for name, w := range r.sextantWorkloads(t) {
		c := &w.pod.Spec.Containers[0]
		cm := r.find("ConfigMap", c.EnvFrom[0].ConfigMapRef.Name).obj.(*corev1.ConfigMap)
		if !strings.HasPrefix(cm.Data["SEXTANT_ETCD_ENDPOINTS"], "https://etcd-0.") {
			t.Errorf("%s: SEXTANT_ETCD_ENDPOINTS=%q, want etcd.endpoints", name, cm.Data["SEXTANT_ETCD_ENDPOINTS"])
		}
		mount := ""
		for _, m := range c.VolumeMounts {
			if m.Name == "etcd-tls" {
				mount = m.MountPath
			}
		}
		var secret string
		for _, v := range w.pod.Spec.Volumes {
			if v.Name == "etcd-tls" && v.Secret != nil {
				secret = v.Secret.SecretName
			}
		}
		if mount == "" || secret != "etcd-client-tls" {
			t.Errorf("%s: Secret etcd-client-tls not mounted (mount %q, Secret %q)", name, mount, secret)
		}
		for k, file := range map[string]string{"SEXTANT_ETCD_CA_FILE": "ca.pem", "SEXTANT_ETCD_CERT_FILE": "tls.crt", "SEXTANT_ETCD_KEY_FILE": "tls.key"} {
			if want := mount + "/" + file; cm.Data[k] != want {
				t.Errorf("%s: %s=%q, want %q", name, k, cm.Data[k], want)
			}
		}
		for env, key := range map[string]string{"SEXTANT_ETCD_USERNAME": "user", "SEXTANT_ETCD_PASSWORD": "pass"} {
			e, ok := envValue(c, env)
			if !ok || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil ||
				e.ValueFrom.SecretKeyRef.Name != "etcd-credentials" || e.ValueFrom.SecretKeyRef.Key != key {
				t.Errorf("%s: %s is not key %q of Secret etcd-credentials: %+v", name, env, key, e)
			}
		}
	}
	d := get(t, renderDefault)
	for name, w := range d.sextantWorkloads(t) {
		c := &w.pod.Spec.Containers[0]
		cm := d.find("ConfigMap", c.EnvFrom[0].ConfigMapRef.Name).obj.(*corev1.ConfigMap)
		for _, k := range []string{"SEXTANT_ETCD_CA_FILE", "SEXTANT_ETCD_CERT_FILE", "SEXTANT_ETCD_KEY_FILE", "SEXTANT_ETCD_USERNAME", "SEXTANT_ETCD_PASSWORD"} {
			_, inEnv := envValue(c, k)
			if _, inCM := cm.Data[k]; inEnv || inCM {
				t.Errorf("%s: default values set %s", name, k)
			}
		}
	}
}
