package xds

import (
	"google.golang.org/protobuf/types/known/anypb"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/sdk"
)

// faultFilter is the name of the fault filter whose per-route config sheds
// by priority (PriorityRoutes).
const faultFilter = "envoy.filters.http.fault"

// Shed is a service's overload decision as priority routes carry it: the
// admission level, and the business priority of calls that carry none.
// A nil *Shed sheds nothing.
type Shed struct {
	Level           int32
	DefaultPriority int32
}

// shedOf is decision as a Shed, nil when it sheds nothing.
func shedOf(decision *api.Overload, defaultPriority int32) *Shed {
	if l := decision.Level(); l > 0 {
		return &Shed{Level: l, DefaultPriority: defaultPriority}
	}
	return nil
}

// withPriorities prepends to base (a route matching some requests) the
// routes that shed by the admission level, as the SDK's gate does, for a
// caller that sends the priority headers (x-sextant-priority, and
// x-sextant-user-priority): a business priority below the level's is
// aborted; at the level's, a user priority below the level's is aborted,
// and a call without a user priority is aborted with the share of user
// priorities below; a priority above passes. A call without a priority
// counts at the default priority (the abort on base itself).
func withPriorities(base *routev3.Route, shed *Shed) []*routev3.Route {
	if shed == nil {
		return []*routev3.Route{base}
	}
	prio, user := int64(shed.Level/api.UserLevels), int64(shed.Level%api.UserLevels)
	variant := func(name string, ppm uint32, headers ...*routev3.HeaderMatcher) *routev3.Route {
		r := &routev3.Route{
			Name:   base.Name + "/" + name,
			Match:  &routev3.RouteMatch{PathSpecifier: base.Match.PathSpecifier, Headers: headers},
			Action: base.Action,
		}
		abort(r, ppm)
		return r
	}
	var out []*routev3.Route
	if prio > 0 {
		out = append(out, variant("below", 1_000_000, rangeHeader(sdk.PriorityKey, 0, prio)))
	}
	if user > 0 {
		exact := rangeHeader(sdk.PriorityKey, prio, prio+1)
		out = append(out,
			variant("at-users-below", 1_000_000, exact, rangeHeader(sdk.UserPriorityKey, 0, user)),
			variant("at-no-user", uint32(user*1_000_000/api.UserLevels), exact,
				&routev3.HeaderMatcher{Name: sdk.UserPriorityKey, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: false}}))
	}
	out = append(out, variant("admitted", 0, &routev3.HeaderMatcher{Name: sdk.PriorityKey, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}))
	def := &routev3.Route{Name: base.Name, Match: base.Match, Action: base.Action}
	abort(def, DropPerMillion(&api.Overload{State: api.StateOverloaded, AdmitMinLevel: shed.Level}, shed.DefaultPriority))
	return append(out, def)
}

func rangeHeader(name string, start, end int64) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{
		RangeMatch: &typev3.Int64Range{Start: start, End: end}}}
}

// abort makes r fail ppm per million of its calls with UNAVAILABLE (gRPC)
// or 503 (HTTP) before they are sent; nothing when ppm is 0.
func abort(r *routev3.Route, ppm uint32) {
	if ppm == 0 {
		return
	}
	f, err := anypb.New(&faultv3.HTTPFault{Abort: &faultv3.FaultAbort{
		ErrorType:  &faultv3.FaultAbort_GrpcStatus{GrpcStatus: 14},
		Percentage: &typev3.FractionalPercent{Numerator: ppm, Denominator: typev3.FractionalPercent_MILLION},
	}})
	if err != nil {
		return
	}
	r.TypedPerFilterConfig = map[string]*anypb.Any{faultFilter: f}
}
