package core

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/kitex_gen/sextant/meshcore"
)

// Rejection codes of PublishPolicy.
const (
	RejectInvalid         = "invalid"
	RejectStaleVersion    = "stale_version"
	RejectUnknownInstance = "unknown_instance"
)

// policyStore serves MeshCore.PublishPolicy: it validates a policy and
// writes it to etcd, comparing the revision it read so that two publishers
// never lose an update.
type policyStore struct {
	etcd    *clientv3.Client
	keys    api.Keys
	cache   *Cache
	metrics *metrics
}

var _ meshcore.MeshCore = (*policyStore)(nil)

func reject(code, field, format string, args ...any) *meshcore.PolicyRejected {
	return &meshcore.PolicyRejected{Code: code, Field: field, Message: fmt.Sprintf(format, args...)}
}

// validatePolicy checks p against the registrations of its service.
func validatePolicy(p *meshcore.Policy, regs map[string]api.Registration) *meshcore.PolicyRejected {
	if p == nil {
		return reject(RejectInvalid, "policy", "policy is required")
	}
	if fe := api.KeyName("service", p.Service); fe != nil {
		return reject(RejectInvalid, fe.Field, "%s", fe.Message)
	}
	if p.Version <= 0 {
		return reject(RejectInvalid, "version", "version must be positive, got %d", p.Version)
	}
	if p.Overload == nil {
		return reject(RejectInvalid, "overload", "overload is required")
	}
	if fe := checkOverload("overload", p.Overload); fe != nil {
		return fe
	}
	seen := map[string]bool{}
	positive := 0
	for i, w := range p.Weights {
		field := api.Index("weights", i)
		switch {
		case w == nil:
			return reject(RejectInvalid, field, "null weight")
		case seen[w.Instance]:
			return reject(RejectInvalid, field+".instance", "instance %q appears twice", w.Instance)
		case w.Weight < 0 || w.Weight > 1000:
			return reject(RejectInvalid, field+".weight", "%d is outside [0, 1000]", w.Weight)
		case (w.Weight == 0) != w.Ejected:
			return reject(RejectInvalid, field+".weight", "weight 0 is for ejected instances only (weight %d, ejected %v)", w.Weight, w.Ejected)
		case w.EjectedUntilMs < 0 || (w.EjectedUntilMs > 0 && !w.Ejected):
			return reject(RejectInvalid, field+".ejected_until_ms", "%d: a time for ejected instances only", w.EjectedUntilMs)
		case w.Ejections < 0:
			return reject(RejectInvalid, field+".ejections", "%d is negative", w.Ejections)
		}
		if _, ok := regs[w.Instance]; !ok {
			return reject(RejectUnknownInstance, field+".instance", "%q is not a registered instance of %q", w.Instance, p.Service)
		}
		seen[w.Instance] = true
		if w.Weight > 0 {
			positive++
		}
	}
	if len(p.Weights) > 0 && positive == 0 {
		return reject(RejectInvalid, "weights", "every weight is zero")
	}
	if len(p.ZoneRouting) > api.MaxZones {
		return reject(RejectInvalid, "zone_routing", "%d zones, at most %d", len(p.ZoneRouting), api.MaxZones)
	}
	for from, to := range p.ZoneRouting {
		field := api.Join("zone_routing", from)
		if fe := api.Name(field, from, true); fe != nil {
			return reject(RejectInvalid, fe.Field, "%s", fe.Message)
		}
		if len(to) > api.MaxZones {
			return reject(RejectInvalid, field, "%d zones, at most %d", len(to), api.MaxZones)
		}
		for zone, share := range to {
			// A zone without a name holds the instances that report none.
			if fe := api.Name(api.Join(field, zone), zone, false); fe != nil {
				return reject(RejectInvalid, fe.Field, "%s", fe.Message)
			}
			if !(share >= 0 && share <= 1) {
				return reject(RejectInvalid, api.Join(field, zone), "%g is outside [0, 1]", share)
			}
		}
	}
	for id, o := range p.InstanceOverload {
		if _, ok := regs[id]; !ok {
			return reject(RejectUnknownInstance, api.Join("instance_overload", id), "%q is not a registered instance of %q", id, p.Service)
		}
		if fe := checkOverload(api.Join("instance_overload", id), o); fe != nil {
			return fe
		}
	}
	return nil
}

func checkOverload(field string, o *meshcore.Overload) *meshcore.PolicyRejected {
	if o == nil {
		return reject(RejectInvalid, field, "null overload")
	}
	if fe := api.Under(field, storedOverload(o).Validate()); fe != nil {
		return reject(RejectInvalid, fe.Field, "%s", fe.Message)
	}
	return nil
}

// storedPolicy is p as stored in etcd and read by every reader of policies:
// the contract's type, not the IDL's.
func storedPolicy(p *meshcore.Policy) *api.Policy {
	out := &api.Policy{Service: p.Service, Version: p.Version, Weights: make([]api.InstanceWeight, len(p.Weights)),
		Overload: storedOverload(p.Overload), ComputedAtMs: p.ComputedAtMs, CalculatorID: p.CalculatorId}
	for i, w := range p.Weights {
		out.Weights[i] = api.InstanceWeight{Instance: w.Instance, Weight: w.Weight, Ejected: w.Ejected, Reason: w.Reason,
			EjectedUntilMs: w.EjectedUntilMs, Ejections: w.Ejections}
	}
	if len(p.ZoneRouting) > 0 {
		out.ZoneRouting = make(map[string]map[string]float64, len(p.ZoneRouting))
		for from, to := range p.ZoneRouting {
			out.ZoneRouting[from] = maps.Clone(to)
		}
	}
	if len(p.InstanceOverload) > 0 {
		out.InstanceOverload = make(map[string]*api.Overload, len(p.InstanceOverload))
		for id, o := range p.InstanceOverload {
			out.InstanceOverload[id] = storedOverload(o)
		}
	}
	return out
}

func storedOverload(o *meshcore.Overload) *api.Overload {
	if o == nil {
		return nil
	}
	return &api.Overload{State: o.State, AdmitMinPriority: o.AdmitMinPriority, AdmitMinLevel: o.AdmitMinLevel}
}

// MaxPoliciesPerBatch bounds PublishPolicies: its transaction holds a
// compare and a put per policy, within etcd's --max-txn-ops (128).
const MaxPoliciesPerBatch = 64

// PublishPolicy implements meshcore.MeshCore.
func (s *policyStore) PublishPolicy(ctx context.Context, req *meshcore.PublishPolicyRequest) (*meshcore.PublishPolicyResponse, error) {
	results, err := s.store(ctx, []*meshcore.Policy{req.GetPolicy()})
	if err != nil {
		return nil, err
	}
	if r := results[0]; r.Rejected != nil {
		return nil, r.Rejected
	}
	return &meshcore.PublishPolicyResponse{StoredVersion: results[0].StoredVersion, EtcdRevision: results[0].EtcdRevision}, nil
}

// PublishPolicies implements meshcore.MeshCore: every policy is validated on
// its own, and the valid ones are written in one etcd transaction.
func (s *policyStore) PublishPolicies(ctx context.Context, req *meshcore.PublishPoliciesRequest) (*meshcore.PublishPoliciesResponse, error) {
	if n := len(req.GetPolicies()); n > MaxPoliciesPerBatch {
		return nil, fmt.Errorf("%d policies in one batch, at most %d", n, MaxPoliciesPerBatch)
	}
	results, err := s.store(ctx, req.GetPolicies())
	if err != nil {
		return nil, err
	}
	return &meshcore.PublishPoliciesResponse{Results: results}, nil
}

// store validates policies and writes the valid ones at once, comparing the
// revision of every key it read so that two publishers never lose an
// update. A policy whose version is not above the stored one is rejected
// as stale. An error means nothing was written.
func (s *policyStore) store(ctx context.Context, policies []*meshcore.Policy) ([]*meshcore.PolicyOutcome, error) {
	results := make([]*meshcore.PolicyOutcome, len(policies))
	var valid []int // indexes of the policies to write
	for i, p := range policies {
		results[i] = &meshcore.PolicyOutcome{Service: p.GetService()}
		// Instances imported from peers may be weighed too: this cluster's
		// callers report their calls to them.
		rej := validatePolicy(p, s.cache.withImported(p.GetService(), s.cache.Instances(p.GetService())))
		if rej != nil && rej.Code == RejectUnknownInstance {
			// The cache follows etcd a moment behind: ask etcd before refusing.
			regs, err := s.registrations(ctx, p.Service)
			if err != nil {
				s.metrics.policies.WithLabelValues("unavailable").Add(float64(len(policies)))
				return nil, fmt.Errorf("policy store unavailable: %w", err)
			}
			rej = validatePolicy(p, s.cache.withImported(p.Service, regs))
		}
		if rej != nil {
			s.metrics.policies.WithLabelValues(rej.Code).Inc()
			results[i].Rejected = rej
			continue
		}
		if slices.ContainsFunc(valid, func(j int) bool { return policies[j].Service == p.Service }) {
			results[i].Rejected = reject(RejectInvalid, "policy.service", "%q appears twice in one batch", p.Service)
			s.metrics.policies.WithLabelValues(RejectInvalid).Inc()
			continue
		}
		valid = append(valid, i)
	}
	for attempt := 0; attempt < 5 && len(valid) > 0; attempt++ {
		done, err := s.write(ctx, policies, valid, results)
		if err != nil {
			s.metrics.policies.WithLabelValues("unavailable").Add(float64(len(valid)))
			return nil, fmt.Errorf("policy store unavailable: %w", err)
		}
		if done {
			return results, nil
		}
		// Another publisher wrote in between: read again.
	}
	if len(valid) == 0 {
		return results, nil
	}
	s.metrics.policies.WithLabelValues("conflict").Add(float64(len(valid)))
	return nil, errors.New("policy store: too many concurrent writers, retry")
}

// write reads the stored versions of the valid policies, rejects the stale
// ones, and writes the others if none of their keys moved since the read;
// false when one did.
func (s *policyStore) write(ctx context.Context, policies []*meshcore.Policy, valid []int, results []*meshcore.PolicyOutcome) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	reads := make([]clientv3.Op, len(valid))
	for n, i := range valid {
		reads[n] = clientv3.OpGet(s.keys.Policy(policies[i].Service))
	}
	cur, err := s.etcd.Txn(ctx).Then(reads...).Commit()
	if err != nil {
		return false, err
	}
	var cmps []clientv3.Cmp
	var puts []clientv3.Op
	var written []int
	for n, i := range valid {
		p, key := policies[i], s.keys.Policy(policies[i].Service)
		cond := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
		if kvs := cur.Responses[n].GetResponseRange().GetKvs(); len(kvs) > 0 {
			var stored api.Policy
			if err := json.Unmarshal(kvs[0].Value, &stored); err == nil && p.Version <= stored.Version {
				rej := reject(RejectStaleVersion, "version", "version %d is not above the stored %d", p.Version, stored.Version)
				rej.CurrentVersion = stored.Version
				results[i].Rejected = rej
				s.metrics.policies.WithLabelValues(RejectStaleVersion).Inc()
				continue
			}
			cond = clientv3.Compare(clientv3.ModRevision(key), "=", kvs[0].ModRevision)
		}
		value, err := json.Marshal(storedPolicy(p))
		if err != nil {
			return false, err
		}
		cmps = append(cmps, cond)
		puts = append(puts, clientv3.OpPut(key, string(value)))
		written = append(written, i)
	}
	if len(puts) == 0 {
		return true, nil
	}
	resp, err := s.etcd.Txn(ctx).If(cmps...).Then(puts...).Commit()
	if err != nil {
		return false, err
	}
	if !resp.Succeeded {
		for _, i := range valid {
			results[i].Rejected = nil // decided again on the next read
		}
		return false, nil
	}
	for _, i := range written {
		results[i].StoredVersion, results[i].EtcdRevision = policies[i].Version, resp.Header.Revision
		s.metrics.policies.WithLabelValues("stored").Inc()
	}
	return true, nil
}

// registrations reads a service's registrations from etcd.
func (s *policyStore) registrations(ctx context.Context, service string) (map[string]api.Registration, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	prefix := s.keys.ServiceRegistry(service)
	resp, err := s.etcd.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	regs := make(map[string]api.Registration, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var r api.Registration
		if json.Unmarshal(kv.Value, &r) == nil {
			regs[strings.TrimPrefix(string(kv.Key), prefix)] = r
		}
	}
	return regs, nil
}
