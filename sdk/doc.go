// Package sdk is Sextant's public Go SDK for data planes: it will poll the
// control plane, pick instances by the published weights, shed low-priority
// requests under overload and report telemetry. It has no logic yet.
package sdk
