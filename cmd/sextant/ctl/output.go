package ctl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pmezard/go-difflib/difflib"
	"sigs.k8s.io/yaml"
)

// emit prints v as JSON or YAML for -o json|yaml and returns true; for
// tables it returns false and the caller prints its own.
func emit(w io.Writer, format string, v any) (bool, error) {
	switch format {
	case "json":
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return true, err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return true, err
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return true, err
		}
		_, err = w.Write(b)
		return true, err
	}
	return false, nil
}

// table writes aligned columns.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	t.row(toAny(header)...)
	return t
}

func (t *table) row(cells ...any) {
	parts := make([]string, len(cells))
	for i, c := range cells {
		parts[i] = fmt.Sprint(c)
	}
	fmt.Fprintln(t.tw, strings.Join(parts, "\t"))
}

func (t *table) flush() { t.tw.Flush() }

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// pretty indents a JSON document with sorted keys, so that two documents
// equal in meaning print the same.
func pretty(doc []byte) ([]byte, error) {
	var v any
	d := json.NewDecoder(bytes.NewReader(doc))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// sameMeaning tells whether two JSON documents are equal once parsed.
func sameMeaning(a, b []byte) bool {
	pa, errA := pretty(a)
	pb, errB := pretty(b)
	return errA == nil && errB == nil && bytes.Equal(pa, pb)
}

// unifiedDiff is a diff of two documents, pretty-printed, empty when equal
// in meaning.
func unifiedDiff(fromName string, from []byte, toName string, to []byte) (string, error) {
	var a, b []byte
	var err error
	if len(from) > 0 {
		if a, err = pretty(from); err != nil {
			return "", fmt.Errorf("%s: %w", fromName, err)
		}
	}
	if b, err = pretty(to); err != nil {
		return "", fmt.Errorf("%s: %w", toName, err)
	}
	return difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: difflib.SplitLines(string(a)), B: difflib.SplitLines(string(b)),
		FromFile: fromName, ToFile: toName, Context: 3,
	})
}

func ago(ms int64) string {
	if ms <= 0 {
		return "-"
	}
	return time.Since(time.UnixMilli(ms)).Round(time.Second).String()
}

func when(ms int64) string {
	if ms <= 0 {
		return "-"
	}
	return time.UnixMilli(ms).UTC().Format(time.DateTime)
}

func percent(f float64) string { return fmt.Sprintf("%.1f%%", 100*f) }
