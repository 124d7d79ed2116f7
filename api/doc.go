// Package api is Sextant's contract between its parts and with its users: the
// JSON wire types of every public HTTP API (telemetry, registration,
// discovery, governance config and its watch), the error shape and codes they
// answer with, the etcd key layout and the schemas of the values stored
// there. docs/design.md describes the parts that speak it.
//
// The package depends on the standard library only, so that a data plane
// that imports it (through the SDK or directly) builds nothing of the
// control plane. The services decode the same types with their own faster
// decoders; storage and the public JSON depend on these types, never on
// generated Thrift structs, so renaming an IDL field changes neither.
package api
