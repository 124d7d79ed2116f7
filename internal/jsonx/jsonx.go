// Package jsonx decodes request bodies on the services' hot paths strictly
// with sonic and, when a body is bad, names the first offending field by its
// JSON path ("calls[3].requests") as api.Decode does.
//
// sonic's errors carry a byte offset but no path, so on failure the body is
// walked by api.Diagnose against the target type. Bad bodies are rare, so
// only they pay for the walk.
package jsonx

import (
	"strings"
	"unsafe"

	"github.com/bytedance/sonic"

	"github.com/sextant-mesh/sextant/api"
)

// CopyString: decoded values outlive the request body, whose buffer is reused.
var strict = sonic.Config{DisallowUnknownFields: true, CopyString: true}.Froze()

// view leaves strings pointing into the body (DecodeView).
var view = sonic.Config{DisallowUnknownFields: true}.Froze()

// DecodeView is Decode for values that do not outlive data: their strings
// point into it, without a copy of the body or of each string.
func DecodeView(data []byte, v any) *api.FieldError {
	if err := view.UnmarshalFromString(unsafe.String(unsafe.SliceData(data), len(data)), v); err == nil {
		return nil
	}
	return Decode(data, v) // names the bad field, as Decode does
}

// Decode decodes data into v, which must be a pointer. Unknown fields, values
// of the wrong type and numbers that do not fit their Go type are errors. Any
// failure is returned as a *api.FieldError.
func Decode(data []byte, v any) *api.FieldError {
	err := strict.Unmarshal(data, v)
	if err == nil {
		return nil
	}
	if fe := api.Diagnose(data, v); fe != nil {
		return fe
	}
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	return api.Errorf("", api.CodeMalformedJSON, "%s", strings.TrimSpace(msg))
}

// DecodeObject is Decode for a document that must be a JSON object.
func DecodeObject(data []byte, v any) *api.FieldError {
	if fe := api.CheckObject(data); fe != nil {
		return fe
	}
	return Decode(data, v)
}
