// MeshCore: weight-calculator -> mesh-core.
// mesh-core is the only writer of policies in etcd; the calculator publishes
// every computed change here.
namespace go sextant.meshcore

struct InstanceWeight {
    1: string instance
    // 1..1000, or 0 when ejected.
    2: i32 weight
    3: bool ejected
    // Why the weight is what it is (e.g. "computed", "blackout", "stale", "ejected:errors").
    4: string reason
    // When an ejected instance comes back (unix ms, the calculator's clock);
    // 0 when not ejected. A calculator that takes the service over keeps the
    // ejection until then.
    5: i64 ejected_until_ms
    // The ejections in a row the ejection backoff counts (an instance
    // ejected again is ejected for longer); 0 when none.
    6: i32 ejections
}

struct Overload {
    // normal | overloaded | recovering
    1: string state
    // Data planes drop requests whose priority is below this (0 admits all).
    2: i32 admit_min_priority
    // Data planes drop requests whose admission level (business priority x 64
    // + user priority) is below this (0 admits all); it refines
    // admit_min_priority, which is its business priority.
    3: i32 admit_min_level
}

// The dynamic policy of one service. Instances absent from weights get the
// median of the policy's weights; an empty list returns the whole service to
// static weights.
struct Policy {
    1: string service
    // Monotonically increasing per service; mesh-core rejects a version not
    // above the stored one.
    2: i64 version
    3: list<InstanceWeight> weights
    4: Overload overload
    // Per-instance overload, where reports allow it.
    5: map<string, Overload> instance_overload
    6: i64 computed_at_ms
    7: string calculator_id
    // Zone-aware routing: for callers in each zone (the key), the share of
    // their requests each zone of the service should get (docs/weights.md);
    // empty when off, or when no caller reported its zone.
    8: map<string, map<string, double>> zone_routing
}

struct PublishPolicyRequest {
    1: Policy policy
}

struct PublishPolicyResponse {
    1: i64 stored_version
    2: i64 etcd_revision
}

exception PolicyRejected {
    // invalid | stale_version | unknown_instance
    1: string code
    2: string message
    3: string field
    // With stale_version: the version mesh-core holds, so that a new owner
    // of the service can publish above it.
    4: i64 current_version
}

// Several services' policies at once: one call, and one etcd transaction for
// all the policies that pass validation.
struct PublishPoliciesRequest {
    1: list<Policy> policies
}

// The outcome of one policy of a batch: stored (rejected unset) or rejected.
struct PolicyOutcome {
    1: string service
    2: i64 stored_version
    3: i64 etcd_revision
    4: optional PolicyRejected rejected
}

struct PublishPoliciesResponse {
    // In the order of the request's policies.
    1: list<PolicyOutcome> results
}

service MeshCore {
    PublishPolicyResponse PublishPolicy(1: PublishPolicyRequest req) throws (1: PolicyRejected err)
    // An error (etcd unreachable, too many concurrent writers) means nothing
    // of the batch was stored; retry it.
    PublishPoliciesResponse PublishPolicies(1: PublishPoliciesRequest req)
}
