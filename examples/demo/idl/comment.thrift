// The demo's backend: a comment service whose instances have different
// capacities.
namespace go sextant.demo

struct GetRequest {
    1: string id
}

struct GetResponse {
    // The instance that served the request.
    1: string instance
    2: string text
}

service Comment {
    GetResponse Get(1: GetRequest req)
}
