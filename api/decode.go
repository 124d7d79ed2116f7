package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Decode decodes the JSON document data into v, which must be a pointer,
// strictly: unknown fields, values of the wrong type, numbers that do not fit
// their Go type and trailing data are errors, returned as a *FieldError that
// names the first offending field.
func Decode(data []byte, v any) *FieldError {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, extra := dec.Token(); extra != io.EOF {
			return Errorf("", CodeMalformedJSON, "data after the JSON document")
		}
		return nil
	}
	if fe := Diagnose(data, v); fe != nil {
		return fe
	}
	return Errorf("", CodeMalformedJSON, "%s", firstLine(err.Error()))
}

// DecodeObject is Decode for a document that must be a JSON object.
func DecodeObject(data []byte, v any) *FieldError {
	if fe := CheckObject(data); fe != nil {
		return fe
	}
	return Decode(data, v)
}

// CheckObject names a document that is not a JSON object.
func CheckObject(data []byte) *FieldError {
	if t := bytes.TrimSpace(data); len(t) == 0 || t[0] != '{' {
		return Errorf("", CodeInvalidType, "want a JSON object")
	}
	return nil
}

// Diagnose explains why data does not decode strictly into v (a pointer):
// it decodes data into generic values and walks them against v's type. It
// returns nil when it finds nothing wrong, so a decoder that failed for
// another reason reports its own error. Bad documents are rare, so only
// they pay for the walk.
func Diagnose(data []byte, v any) *FieldError {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return Errorf("", CodeMalformedJSON, "%s", firstLine(err.Error()))
	}
	return walk(reflect.TypeOf(v).Elem(), doc, "")
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}

func walk(t reflect.Type, v any, path string) *FieldError {
	if v == nil { // null leaves the zero value, as encoding/json does
		return nil
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			return typeError(path, "an object", v)
		}
		fields := structFields(t)
		for _, name := range sortedKeys(obj) {
			f, ok := fields[name]
			if !ok {
				return Errorf(Join(path, name), CodeUnknownField, "unknown field %q", name)
			}
			if fe := walk(f.Type, obj[name], Join(path, name)); fe != nil {
				return fe
			}
		}
	case reflect.Slice, reflect.Array:
		arr, ok := v.([]any)
		if !ok {
			return typeError(path, "an array", v)
		}
		for i, e := range arr {
			if fe := walk(t.Elem(), e, Index(path, i)); fe != nil {
				return fe
			}
		}
	case reflect.Map:
		obj, ok := v.(map[string]any)
		if !ok {
			return typeError(path, "an object", v)
		}
		for _, k := range sortedKeys(obj) {
			if fe := checkScalar(t.Key(), k, Join(path, k), true); fe != nil {
				return fe
			}
			if fe := walk(t.Elem(), obj[k], Join(path, k)); fe != nil {
				return fe
			}
		}
	case reflect.Interface:
		return nil
	default:
		return checkScalar(t, v, path, false)
	}
	return nil
}

// checkScalar checks a JSON scalar against a Go kind. A map key arrives as a
// string and is parsed as the key's kind.
func checkScalar(t reflect.Type, v any, path string, isKey bool) *FieldError {
	num, isNum := v.(json.Number)
	s, isStr := v.(string)
	if isKey && isStr && t.Kind() != reflect.String {
		num, isNum, isStr = json.Number(s), true, false
	}
	switch t.Kind() {
	case reflect.String:
		if !isStr {
			return typeError(path, "a string", v)
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			return typeError(path, "a boolean", v)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if !isNum {
			return typeError(path, "an integer", v)
		}
		if _, err := strconv.ParseInt(string(num), 10, t.Bits()); err != nil {
			return numberError(path, "an integer", string(num), err)
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if !isNum {
			return typeError(path, "a non-negative integer", v)
		}
		if _, err := strconv.ParseUint(string(num), 10, t.Bits()); err != nil {
			return numberError(path, "a non-negative integer", string(num), err)
		}
	case reflect.Float32, reflect.Float64:
		if !isNum {
			return typeError(path, "a number", v)
		}
		f, err := strconv.ParseFloat(string(num), t.Bits())
		if err != nil || math.IsInf(f, 0) {
			return Errorf(path, CodeOutOfRange, "number %s does not fit a finite float", num)
		}
	}
	return nil
}

func numberError(path, want, num string, err error) *FieldError {
	if errors.Is(err, strconv.ErrRange) {
		return Errorf(path, CodeOutOfRange, "number %s is out of range", num)
	}
	return Errorf(path, CodeInvalidType, "want %s, got %s", want, num)
}

func typeError(path, want string, got any) *FieldError {
	return Errorf(path, CodeInvalidType, "want %s, got %s", want, describe(got))
}

func describe(v any) string {
	switch x := v.(type) {
	case string:
		if len(x) > 32 {
			x = x[:32] + "..."
		}
		return "string " + strconv.Quote(x)
	case json.Number:
		return "number " + string(x)
	case bool:
		return "boolean"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	default:
		return fmt.Sprintf("%T", v)
	}
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	// Sorted so that the field reported first is stable between runs.
	slices.Sort(keys)
	return keys
}

var fieldCache sync.Map // reflect.Type -> map[string]reflect.StructField

func structFields(t reflect.Type) map[string]reflect.StructField {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]reflect.StructField)
	}
	m := make(map[string]reflect.StructField, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			// An embedded struct's fields are the outer object's, as in encoding/json.
			for k, v := range structFields(f.Type) {
				if _, ok := m[k]; !ok {
					m[k] = v
				}
			}
			continue
		}
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		m[name] = f
	}
	fieldCache.Store(t, m)
	return m
}
