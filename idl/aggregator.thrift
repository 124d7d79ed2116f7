// Aggregator: telemetry-mixer -> weight-calculator.
// The mixer sends every record of an accepted telemetry report to the
// calculator shard that owns its service: the server part to the owner of
// reporter.service, a call, a dry-run denial and a unit route to the owner
// of callee_service. What one shard receives of one report is a ReportPart: the
// reporter and the window once, then the records the shard owns.
namespace go sextant.aggregator

struct Reporter {
    1: string service
    2: string instance
    3: string cluster
    4: string zone
}

// What an instance reports about itself for one window.
struct ServerRecord {
    1: Reporter reporter
    2: i64 window_ms
    3: i64 timestamp_ms
    4: i64 requests
    5: double cpu_util
    6: double queue_time_ms_avg
    7: double queue_time_ms_p99
    8: i64 inflight
    9: i64 client_timeouts
    // priority (0..127) -> requests in the window, as they arrived
    10: map<i32, i64> requests_by_priority
    // admission level (business priority x 64 + user priority, 0..8191) ->
    // requests in the window, as they arrived
    11: map<i32, i64> requests_by_level
}

// What one caller saw of one callee instance for one window.
struct CallEdge {
    1: Reporter caller
    2: i64 window_ms
    3: i64 timestamp_ms
    4: string callee_service
    5: string callee_instance
    6: i64 requests
    7: i64 errors
    8: i64 timeouts
    9: double latency_ms_avg
    10: double latency_ms_p99
}

// Requests an access-control rule in dry_run mode would have denied.
struct DryRunDenial {
    1: Reporter reporter
    2: i64 timestamp_ms
    3: string callee_service
    4: string caller_service
    5: string rule
    6: i64 count
}

// What an instance reports about its own serving side for one window.
struct ServerStats {
    1: i64 requests
    2: double cpu_util
    3: double queue_time_ms_avg
    4: double queue_time_ms_p99
    5: i64 inflight
    6: i64 client_timeouts
    7: map<i32, i64> requests_by_priority
    8: map<i32, i64> requests_by_level
}

// What the reporter saw of its calls to one callee instance.
struct Call {
    1: string callee_service
    2: string callee_instance
    3: i64 requests
    4: i64 errors
    5: i64 timeouts
    6: double latency_ms_avg
    7: double latency_ms_p99
}

// Requests an access rule in dry_run mode would have denied.
struct Denial {
    1: string callee_service
    2: string caller_service
    3: string rule
    4: i64 count
}

// Requests to a callee that one of its unit_routing rules matched, by
// outcome (observed, observed_denied, routed, denied, fallback, failed).
struct UnitRoute {
    1: string callee_service
    2: string rule
    3: string unit
    4: string outcome
    5: i64 count
}

// The records of one report that one shard owns.
struct ReportPart {
    1: Reporter reporter
    2: i64 window_ms
    3: i64 timestamp_ms
    // Set when the shard owns reporter.service.
    4: optional ServerStats server
    5: list<Call> calls
    6: list<Denial> denials
    // Absent when the report has none (the parts of older mixers).
    7: optional list<UnitRoute> unit_routes
}

struct ReportBatch {
    // Identifies the sending mixer and the batch, for logs and de-duplication.
    1: string mixer_id
    2: i64 batch_id
    // The wire format of mixers before parts (a reporter on every record);
    // calculators still read it, so that mixers may be upgraded after them.
    3: list<ServerRecord> servers
    4: list<CallEdge> edges
    5: list<DryRunDenial> denials
    // part_count ReportPart structs in the Thrift binary protocol, one after
    // the other: a mixer encodes a report's part for a shard when it routes
    // the report, and sends what it holds for the shard as it is.
    6: binary parts
    7: i32 part_count
}

struct IngestResponse {
    1: i64 servers_accepted
    2: i64 edges_accepted
    3: i64 denials_accepted
    // Records refused because the calculator tracks too many series already.
    4: i64 records_refused
}

exception IngestError {
    1: string code
    2: string message
}

service Aggregator {
    IngestResponse Ingest(1: ReportBatch batch) throws (1: IngestError err)
}
