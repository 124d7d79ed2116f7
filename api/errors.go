package api

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Error codes that cross the API, in ErrorBody.Error.Code.
const (
	CodeMalformedJSON = "malformed_json"
	CodeUnknownField  = "unknown_field"
	CodeInvalidType   = "invalid_type"
	CodeOutOfRange    = "out_of_range"
	CodeInvalidValue  = "invalid_value"
	CodeMissingField  = "missing_field"
	CodeTooMany       = "too_many"
)

// ErrorBody is the JSON body of every 4xx and 5xx answer of a Sextant API:
// {"error": {"code": ..., "message": ..., "field": ...}}.
type ErrorBody struct {
	Error *FieldError `json:"error"`
}

// FieldError is a client error about one field of a JSON document, named by
// its path ("calls[3].requests"); Field is empty when the whole document is
// at fault.
type FieldError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Code + ": " + e.Message
	}
	return fmt.Sprintf("%s: %s: %s", e.Field, e.Code, e.Message)
}

// Errorf builds a FieldError.
func Errorf(field, code, format string, args ...any) *FieldError {
	return &FieldError{Code: code, Field: field, Message: fmt.Sprintf(format, args...)}
}

// Join appends a child path to a parent path: Join("calls[2]", "requests").
func Join(parent, child string) string {
	switch {
	case parent == "":
		return child
	case child == "":
		return parent
	case strings.HasPrefix(child, "["):
		return parent + child
	default:
		return parent + "." + child
	}
}

// Under puts fe below path: its field becomes path.field. Validators name
// fields relative to what they check and their callers add the path, only
// when there is an error to report.
func Under(path string, fe *FieldError) *FieldError {
	if fe != nil {
		fe.Field = Join(path, fe.Field)
	}
	return fe
}

// Index appends an array index to a path: Index("calls", 3) is "calls[3]".
func Index(parent string, i int) string { return parent + "[" + strconv.Itoa(i) + "]" }

// MaxNameLen bounds service, instance, cluster, zone and rule names.
const MaxNameLen = 253

// Name checks a name: service, instance (host:port), cluster, zone or rule
// names are printable, without whitespace, and at most MaxNameLen bytes.
func Name(field, v string, required bool) *FieldError {
	if v == "" {
		if required {
			return Errorf(field, CodeMissingField, "%s is required", field)
		}
		return nil
	}
	if len(v) > MaxNameLen {
		return Errorf(field, CodeOutOfRange, "%d bytes long, at most %d", len(v), MaxNameLen)
	}
	// Names are ASCII nearly always: '!' to '~' are exactly the ASCII
	// runes the rule below accepts, checked without decoding runes.
	for i := 0; i < len(v); i++ {
		if c := v[i]; c >= utf8.RuneSelf {
			return nameRunes(field, v[i:], v)
		} else if c <= ' ' || c == 0x7f {
			return badName(field, v)
		}
	}
	return nil
}

func nameRunes(field, rest, v string) *FieldError {
	for _, r := range rest {
		if r == unicode.ReplacementChar || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return badName(field, v)
		}
	}
	return nil
}

func badName(field, v string) *FieldError {
	return Errorf(field, CodeInvalidValue, "names must be printable and without spaces, got %q", v)
}

// KeyName is a Name that becomes one segment of an etcd key, so it may not
// contain '/'.
func KeyName(field, v string) *FieldError {
	if fe := Name(field, v, true); fe != nil {
		return fe
	}
	if strings.ContainsRune(v, '/') {
		return Errorf(field, CodeInvalidValue, "%q may not contain '/'", v)
	}
	return nil
}
