package jsonx

import "unicode"

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
	for _, r := range v {
		if r == unicode.ReplacementChar || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return Errorf(field, CodeInvalidValue, "names must be printable and without spaces, got %q", v)
		}
	}
	return nil
}
