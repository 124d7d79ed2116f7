// Command xds measures how fast mesh-core's ADS port fans a weight change
// out to connected xDS clients, and what each connected client costs it.
//
// One child process runs an embedded etcd and one mesh-core with its ADS
// port (plaintext on loopback; GOMAXPROCS from -gomaxprocs). This process
// registers -instances instances of comment-svc, publishes a policy, and
// connects -clients lightweight ADS clients, each on its own gRPC
// connection as every real client has, each subscribing to comment-svc's
// endpoints (EDS, state of the world, as gRPC clients speak it) and
// acknowledging every response. Once all hold the current version, it
// publishes -changes new policies through Kitex PublishPolicy, one every
// -interval, and reports for each how long after PublishPolicy returned
// 50 %, 99 % and 100 % of the clients had acknowledged the new endpoints;
// and mesh-core's memory (RSS and Go heap in use) per connected client,
// from the child before and after the clients connected. See
// docs/benchmarks.md.
//
//	go run ./loadtest/xds -clients 5000
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cloudwego/kitex/client"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sextant-mesh/sextant/kitex_gen/sextant/meshcore"
	meshcoresvc "github.com/sextant-mesh/sextant/kitex_gen/sextant/meshcore/meshcore"
	"github.com/sextant-mesh/sextant/loadtest/internal/meshstack"
	"github.com/sextant-mesh/sextant/loadtest/internal/proc"
	"github.com/sextant-mesh/sextant/services/mesh-core/core"
)

const service = "comment-svc"

// markerHost is the instance whose weight tells the changes apart.
const markerHost = "10.0.0.1"

type options struct {
	clients, instances, changes, procs int
	interval                           time.Duration
}

// serveArg, as the only argument, makes this binary the child.
const serveArg = "-serve-mesh-core"

func main() {
	if len(os.Args) == 2 && os.Args[1] == serveArg {
		exit(serve())
	}
	var o options
	flag.IntVar(&o.clients, "clients", 1000, "connected ADS clients, each on its own connection")
	flag.IntVar(&o.instances, "instances", 20, "registered instances of "+service)
	flag.IntVar(&o.changes, "changes", 5, "weight changes measured")
	flag.IntVar(&o.procs, "gomaxprocs", 2, "GOMAXPROCS of the mesh-core child")
	flag.DurationVar(&o.interval, "interval", 3*time.Second, "time between two changes")
	flag.Parse()
	c, err := spawn(o.procs)
	if err != nil {
		exit(err)
	}
	defer c.Stop()
	rep, err := run(o, c.target, c.Pid())
	if err != nil {
		exit(err)
	}
	fmt.Print(rep)
}

func exit(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "xds:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// target is where a running mesh-core answers, and its operators' token.
type target struct{ http, kitex, xds, admin string }

// startStack starts an embedded etcd in dir and one mesh-core with its ADS
// port on free loopback ports; stop stops both.
func startStack(dir string, log *slog.Logger) (tg target, stop func(), err error) {
	st, err := meshstack.Start(dir, log, func(c *core.Config) { c.XDSAddr = "127.0.0.1:0" })
	if err != nil {
		return tg, nil, err
	}
	mc := st.MeshCore
	return target{http: mc.Addr(), kitex: mc.KitexAddr(), xds: mc.XDSAddr(), admin: st.AdminToken}, st.Stop, nil
}

// serve is the child: start the stack, print where it serves, run until
// signalled.
func serve() error {
	return meshstack.Serve("xds-etcd-", startStack, func(tg target) {
		fmt.Println("serving", tg.http, tg.kitex, tg.xds, tg.admin)
	})
}

type child struct {
	*proc.Child
	target target
}

func spawn(procs int) (*child, error) {
	c, err := proc.Spawn([]string{serveArg}, procs, 60*time.Second)
	if err != nil {
		return nil, err
	}
	if f := strings.Fields(c.FirstLine); len(f) == 5 && f[0] == "serving" {
		return &child{Child: c, target: target{http: f[1], kitex: f[2], xds: f[3], admin: f[4]}}, nil
	}
	c.Stop()
	return nil, fmt.Errorf("mesh-core child did not start: first line %q", c.FirstLine)
}

// adsClient is one connected data plane: an ADS stream subscribed to the
// service's endpoints, acknowledging every response. It records when it
// acknowledged a response holding weight marker.
type adsClient struct {
	conn   *grpc.ClientConn
	stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	marker atomic.Int32 // markerHost's weight in the last response acknowledged
	acked  chan ack
}

type ack struct {
	weight int32
	at     time.Time
}

func connect(ctx context.Context, addr string, id int, acks chan<- ack) (*adsClient, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		// A small client: the figures measured are the server's.
		grpc.WithReadBufferSize(4<<10), grpc.WithWriteBufferSize(4<<10))
	if err != nil {
		return nil, err
	}
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		conn.Close()
		return nil, err
	}
	c := &adsClient{conn: conn, stream: stream}
	req := &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "loadtest-" + strconv.Itoa(id), Cluster: "loadtest"},
		TypeUrl: resourcev3.EndpointType, ResourceNames: []string{service}}
	if err := stream.Send(req); err != nil {
		conn.Close()
		return nil, err
	}
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			w := int32(-1)
			for _, r := range resp.Resources {
				var cla endpointv3.ClusterLoadAssignment
				if r.UnmarshalTo(&cla) != nil {
					continue
				}
				for _, l := range cla.Endpoints {
					for _, e := range l.LbEndpoints {
						if e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress() == markerHost {
							w = int32(e.LoadBalancingWeight.GetValue())
						}
					}
				}
			}
			if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: req.TypeUrl, ResourceNames: req.ResourceNames,
				VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce}); err != nil {
				return
			}
			c.marker.Store(w)
			select {
			case acks <- ack{weight: w, at: time.Now()}:
			default: // the reader is behind: the weight is in marker all the same
			}
		}
	}()
	return c, nil
}

// report is one run's figures.
type report struct {
	o                    options
	connect              time.Duration
	changes              []percentiles
	rssBefore, rssHeld   float64 // MiB
	heapBefore, heapHeld float64 // MiB
	synced, nodes        int
}

type percentiles struct{ p50, p99, p100 time.Duration }

func (r report) String() string {
	var b strings.Builder
	n := float64(r.o.clients)
	fmt.Fprintf(&b, "xds fan-out: %d ADS clients (one connection each), %d instances, mesh-core GOMAXPROCS=%d\n", r.o.clients, r.o.instances, r.o.procs)
	fmt.Fprintf(&b, "  connected and holding the current endpoints in %s; status: %d of %d nodes SYNCED\n", r.connect.Round(time.Millisecond), r.synced, r.nodes)
	fmt.Fprintf(&b, "  mesh-core RSS %.1f -> %.1f MiB (%.1f KiB per client), Go heap in use %.1f -> %.1f MiB (%.1f KiB per client)\n",
		r.rssBefore, r.rssHeld, (r.rssHeld-r.rssBefore)*1024/n, r.heapBefore, r.heapHeld, (r.heapHeld-r.heapBefore)*1024/n)
	for i, c := range r.changes {
		fmt.Fprintf(&b, "  change %d: acknowledged by 50 %% in %s, 99 %% in %s, 100 %% in %s (from PublishPolicy's return)\n",
			i+1, ms(c.p50), ms(c.p99), ms(c.p100))
	}
	return b.String()
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/1e6) }

// run registers the instances, connects the clients and measures the
// changes; pid is mesh-core's process (0 when it runs in this one).
func run(o options, tg target, pid int) (report, error) {
	rep := report{o: o}
	ids := make([]string, o.instances)
	for i := range ids {
		ids[i] = fmt.Sprintf("10.0.%d.%d:9000", i/250, i%250+1)
		if err := operator(tg, "POST", "/v1/instances", map[string]any{"service": service, "instance": ids[i], "addr": ids[i],
			"zone": fmt.Sprintf("z%d", i%3), "static_weight": 100, "ttl_s": 3600}, http.StatusCreated); err != nil {
			return rep, err
		}
	}
	pub, err := meshcoresvc.NewClient("mesh-core", client.WithHostPorts(tg.kitex), client.WithRPCTimeout(10*time.Second))
	if err != nil {
		return rep, err
	}
	version := time.Now().UnixMilli()
	publish := func(weight int32) error {
		version++
		p := &meshcore.Policy{Service: service, Version: version, ComputedAtMs: time.Now().UnixMilli(), CalculatorId: "loadtest",
			Overload: &meshcore.Overload{State: "normal"}}
		for i, id := range ids {
			w := int32(100 + i)
			if i == 0 {
				w = weight // the marker (markerHost)
			}
			p.Weights = append(p.Weights, &meshcore.InstanceWeight{Instance: id, Weight: w, Reason: "loadtest"})
		}
		_, err := pub.PublishPolicy(context.Background(), &meshcore.PublishPolicyRequest{Policy: p})
		return err
	}
	if err := publish(500); err != nil {
		return rep, err
	}
	time.Sleep(500 * time.Millisecond) // let the heap settle before the baseline
	rep.rssBefore, rep.heapBefore = statusMiB(pid, "VmRSS"), heapMiB(tg)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	acks := make(chan ack, o.clients*4)
	clients := make([]*adsClient, 0, o.clients)
	defer func() {
		for _, c := range clients {
			c.conn.Close()
		}
	}()
	start := time.Now()
	for i := range o.clients {
		c, err := connect(ctx, tg.xds, i, acks)
		if err != nil {
			return rep, fmt.Errorf("client %d: %w", i, err)
		}
		clients = append(clients, c)
	}
	if err := waitAll(clients, 500, 120*time.Second); err != nil {
		synced, nodes := syncStatus(tg)
		return rep, fmt.Errorf("%w (status: %d of %d nodes synced)", err, synced, nodes)
	}
	rep.connect = time.Since(start)
	time.Sleep(time.Second)
	rep.rssHeld, rep.heapHeld = statusMiB(pid, "VmRSS"), heapMiB(tg)
	rep.synced, rep.nodes = syncStatus(tg)

	for i := range o.changes {
		weight := int32(501 + i)
		if err := publish(weight); err != nil {
			return rep, err
		}
		published := time.Now()
		var times []time.Duration
		deadline := time.After(60 * time.Second)
		for len(times) < o.clients {
			select {
			case a := <-acks:
				if a.weight == weight {
					times = append(times, a.at.Sub(published))
				}
			case <-deadline:
				return rep, fmt.Errorf("change %d: %d of %d clients acknowledged it in 60 s", i+1, len(times), o.clients)
			}
		}
		slices.Sort(times)
		rep.changes = append(rep.changes, percentiles{p50: times[len(times)/2], p99: times[len(times)*99/100], p100: times[len(times)-1]})
		time.Sleep(o.interval)
	}
	return rep, nil
}

// waitAll waits until every client acknowledged endpoints with weight.
func waitAll(clients []*adsClient, weight int32, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		behind := 0
		for _, c := range clients {
			if c.marker.Load() != weight {
				behind++
			}
		}
		if behind == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			seen := map[int32]int{}
			for _, c := range clients {
				seen[c.marker.Load()]++
			}
			return fmt.Errorf("%d of %d clients without the current endpoints after %s (weights seen: %v)", behind, len(clients), timeout, seen)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func operator(tg target, method, path string, body any, want int) error {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, "http://"+tg.http+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+tg.admin)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		msg, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, msg)
	}
	return nil
}

// syncStatus counts the nodes GET /v1/xds/status shows with EDS SYNCED.
func syncStatus(tg target) (synced, nodes int) {
	req, _ := http.NewRequest("GET", "http://"+tg.http+"/v1/xds/status", nil)
	req.Header.Set("Authorization", "Bearer "+tg.admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1, -1
	}
	defer resp.Body.Close()
	var a struct {
		Nodes []struct {
			Types map[string]struct{ State string }
		}
	}
	if json.NewDecoder(resp.Body).Decode(&a) != nil {
		return -1, -1
	}
	for _, n := range a.Nodes {
		if n.Types["eds"].State == "SYNCED" {
			synced++
		}
	}
	return synced, len(a.Nodes)
}

// heapMiB is mesh-core's Go heap in use, from its /metrics.
func heapMiB(tg target) float64 {
	resp, err := http.Get("http://" + tg.http + "/metrics")
	if err != nil {
		return math.NaN()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "go_memstats_heap_inuse_bytes "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f / (1 << 20)
			}
		}
	}
	return math.NaN()
}

func statusMiB(pid int, field string) float64 {
	v, err := proc.StatusMiB(pid, field)
	if pid == 0 || err != nil {
		return math.NaN()
	}
	return v
}
