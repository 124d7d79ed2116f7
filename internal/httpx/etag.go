package httpx

import (
	"strconv"
	"strings"
)

// ETag is the entity tag of a version or revision: the number in double
// quotes, as RFC 9110 (8.8.3) writes an entity tag.
func ETag(version int64) string {
	return `"` + strconv.FormatInt(version, 10) + `"`
}

// ParseETag reads the version an entity tag names: "5" as ETag writes it,
// W/"5" (weak is true), or 5 bare, as Sextant wrote its tags before they
// were quoted. ok is false for anything else.
func ParseETag(tag string) (version int64, weak, ok bool) {
	tag = strings.TrimSpace(tag)
	if rest, found := strings.CutPrefix(tag, "W/"); found {
		tag, weak = rest, true
	}
	switch {
	case len(tag) >= 2 && tag[0] == '"' && tag[len(tag)-1] == '"':
		tag = tag[1 : len(tag)-1]
	case weak:
		return 0, false, false // W/ stands only before a quoted tag
	}
	n, err := strconv.ParseInt(tag, 10, 64)
	if err != nil || n < 0 {
		return 0, false, false
	}
	return n, weak, true
}

// IfNoneMatch reads the version a long poll waits on from an If-None-Match
// header: its first entity tag, weak or strong (RFC 9110 compares weakly
// here), quoted or bare. ok is false when there is none ("*" included).
func IfNoneMatch(header string) (version int64, ok bool) {
	first, _, _ := strings.Cut(header, ",")
	version, _, ok = ParseETag(first)
	return version, ok
}
