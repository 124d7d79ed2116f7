package ctl

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// DefaultMeshCore is mesh-core's HTTP port in `sextant dev`.
const DefaultMeshCore = "127.0.0.1:7703"

// xdsNode is one line of mesh-core's GET /v1/xds/status.
type xdsNode struct {
	Node        string             `json:"node"`
	Service     string             `json:"service"`
	Identity    string             `json:"identity,omitempty"`
	Peer        string             `json:"peer"`
	Delta       bool               `json:"delta"`
	ConnectedAt time.Time          `json:"connected_at"`
	Types       map[string]xdsType `json:"types"`
}

type xdsType struct {
	State       string `json:"state"`
	Sent        string `json:"sent_version,omitempty"`
	Acked       string `json:"acked_version,omitempty"`
	NackError   string `json:"nack_error,omitempty"`
	NackVersion string `json:"nack_version,omitempty"`
}

// proxyStatusCmd is `sextant proxy-status`: the xDS data planes (gRPC
// clients, Envoys) connected to a mesh-core replica and, per resource
// type, whether each acknowledged the last version sent, as istioctl
// proxy-status shows.
func proxyStatusCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sextant proxy-status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf connFlags
	cf.register(fs, true)
	meshCore := fs.String("mesh-core", "", "mesh-core HTTP address, host:port or a URL (default $SEXTANT_MESH_CORE or "+DefaultMeshCore+")")
	service := fs.String("service", "", "only the nodes of this service")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cf.output != "table" && cf.output != "json" && cf.output != "yaml" {
		return fmt.Errorf("-o %s: want table, json or yaml", cf.output)
	}
	// The credential comes as for the config-center's commands.
	center, err := Connect(cf.context, cf.center, cf.token)
	if err != nil {
		return err
	}
	c, err := NewClient(firstOf(*meshCore, os.Getenv("SEXTANT_MESH_CORE"), DefaultMeshCore), center.token, "")
	if err != nil {
		return err
	}
	var got struct {
		Nodes []xdsNode `json:"nodes"`
	}
	if _, err := c.Do(http.MethodGet, "/v1/xds/status", nil, &got); err != nil {
		return err
	}
	nodes := got.Nodes[:0]
	for _, n := range got.Nodes {
		if *service == "" || n.Service == *service {
			nodes = append(nodes, n)
		}
	}
	if done, err := emit(stdout, cf.output, map[string]any{"nodes": nodes}); done {
		return err
	}
	t := newTable(stdout, "NODE", "SERVICE", "STREAM", "LDS", "RDS", "CDS", "EDS", "CONNECTED")
	var nacks []string
	for _, n := range nodes {
		stream := "sotw"
		if n.Delta {
			stream = "delta"
		}
		t.row(n.Node, n.Service, stream, n.Types["lds"].State, n.Types["rds"].State, n.Types["cds"].State, n.Types["eds"].State,
			time.Since(n.ConnectedAt).Round(time.Second).String()+" ago")
		for _, typ := range []string{"lds", "rds", "cds", "eds"} {
			if e := n.Types[typ].NackError; e != "" {
				nacks = append(nacks, fmt.Sprintf("%s %s rejected version %s: %s", n.Node, strings.ToUpper(typ), n.Types[typ].NackVersion, e))
			}
		}
	}
	t.flush()
	for _, l := range nacks {
		fmt.Fprintln(stdout, l)
	}
	fmt.Fprintf(stdout, "%d xDS nodes connected to this mesh-core replica\n", len(nodes))
	return nil
}
