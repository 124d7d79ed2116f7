// Aggregator: telemetry-mixer -> weight-calculator.
// The mixer splits each accepted telemetry report into records and sends every
// record to the calculator shard that owns its service: a server record to the
// owner of reporter.service, a call edge and a dry-run denial to the owner of
// callee_service.
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

struct ReportBatch {
    // Identifies the sending mixer and the batch, for logs and de-duplication.
    1: string mixer_id
    2: i64 batch_id
    3: list<ServerRecord> servers
    4: list<CallEdge> edges
    5: list<DryRunDenial> denials
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
