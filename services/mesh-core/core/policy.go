package core

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
		out.Weights[i] = api.InstanceWeight{Instance: w.Instance, Weight: w.Weight, Ejected: w.Ejected, Reason: w.Reason}
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

// PublishPolicy implements meshcore.MeshCore.
func (s *policyStore) PublishPolicy(ctx context.Context, req *meshcore.PublishPolicyRequest) (*meshcore.PublishPolicyResponse, error) {
	p := req.GetPolicy()
	rej := validatePolicy(p, s.cache.Instances(p.GetService()))
	if rej != nil && rej.Code == RejectUnknownInstance {
		// The cache follows etcd a moment behind: ask etcd before refusing.
		regs, err := s.registrations(ctx, p.Service)
		if err != nil {
			s.metrics.policies.WithLabelValues("unavailable").Inc()
			return nil, fmt.Errorf("policy store unavailable: %w", err)
		}
		rej = validatePolicy(p, regs)
	}
	if rej != nil {
		s.metrics.policies.WithLabelValues(rej.Code).Inc()
		return nil, rej
	}
	value, err := json.Marshal(storedPolicy(p))
	if err != nil {
		return nil, err
	}
	key := s.keys.Policy(p.Service)
	// Read, compare the version, write if the key has not moved since.
	for attempt := 0; attempt < 5; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		cur, err := s.etcd.Get(cctx, key)
		if err != nil {
			cancel()
			s.metrics.policies.WithLabelValues("unavailable").Inc()
			return nil, fmt.Errorf("policy store unavailable: %w", err)
		}
		cond := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
		if len(cur.Kvs) > 0 {
			var stored api.Policy
			if err := json.Unmarshal(cur.Kvs[0].Value, &stored); err == nil && p.Version <= stored.Version {
				cancel()
				s.metrics.policies.WithLabelValues(RejectStaleVersion).Inc()
				rej := reject(RejectStaleVersion, "version", "version %d is not above the stored %d", p.Version, stored.Version)
				rej.CurrentVersion = stored.Version
				return nil, rej
			}
			cond = clientv3.Compare(clientv3.ModRevision(key), "=", cur.Kvs[0].ModRevision)
		}
		resp, err := s.etcd.Txn(cctx).If(cond).Then(clientv3.OpPut(key, string(value))).Commit()
		cancel()
		if err != nil {
			s.metrics.policies.WithLabelValues("unavailable").Inc()
			return nil, fmt.Errorf("policy store unavailable: %w", err)
		}
		if resp.Succeeded {
			s.metrics.policies.WithLabelValues("stored").Inc()
			return &meshcore.PublishPolicyResponse{StoredVersion: p.Version, EtcdRevision: resp.Header.Revision}, nil
		}
		// Another publisher wrote in between: read again.
	}
	s.metrics.policies.WithLabelValues("conflict").Inc()
	return nil, errors.New("policy store: too many concurrent writers, retry")
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
