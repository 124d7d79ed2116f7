// Package sdk is Sextant's Go SDK for data planes: the side of the loop that
// runs inside a service.
//
//   - Discovery long-polls mesh-core for the instances, dynamic weights and
//     admission threshold of the services a process calls or serves, keeps
//     the last good answer, and falls back to static instances (fail static).
//   - Picker picks instances by weight (smooth weighted round robin).
//   - Gate admits requests on the server side: it sheds priorities below the
//     threshold, applies access rules (enforce or dry run), can bound
//     concurrency, and measures queueing time.
//   - Reporter aggregates telemetry per window and sends it to the mixer.
//   - ConfigWatcher long-polls the config-center for governance config.
//   - Registrar keeps an instance registered in mesh-core.
//
// kitexsdk and hertzsdk plug these into Kitex and Hertz.
package sdk
