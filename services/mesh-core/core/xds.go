package core

import (
	"context"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/protocol/consts"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/services/mesh-core/xds"
)

// xdsState gives the xDS server the cache's snapshots: the translation
// reads the instances and decision each snapshot already merged.
type xdsState struct{ c *Cache }

func (s xdsState) Service(name string) ([]api.Instance, *api.Overload, bool) {
	snap := s.c.Held(name)
	if snap == nil {
		return nil, nil, false
	}
	return snap.Members(), snap.Decision(), true
}

func (s xdsState) Services() []string {
	snaps := s.c.Snapshots()
	out := make([]string, len(snaps))
	for i, snap := range snaps {
		out[i] = snap.Service
	}
	return out
}

// xdsStatusAnswer is GET /v1/xds/status: every connected node and, per
// resource type, whether it acknowledged the last version sent.
type xdsStatusAnswer struct {
	Nodes []xds.NodeStatus `json:"nodes"`
}

func (mc *MeshCore) xdsStatus(_ context.Context, c *app.RequestContext) {
	c.JSON(consts.StatusOK, xdsStatusAnswer{Nodes: mc.xds.Status()})
}

// XDS is the ADS server; nil when --xds-addr is empty.
func (mc *MeshCore) XDS() *xds.Server { return mc.xds }

// XDSAddr is the ADS address; "" when off.
func (mc *MeshCore) XDSAddr() string {
	if mc.xds == nil {
		return ""
	}
	return mc.xds.Addr()
}
