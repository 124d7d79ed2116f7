package sdk

import (
	"math/rand/v2"
	"time"
)

// Default keys an Edge reads a request's user id and request id from.
const (
	DefaultUserIDKey    = "x-user-id"
	DefaultRequestIDKey = "x-request-id"
)

// Edge assigns a Priority to a request that enters the mesh without one:
// the business priority from the priority rules in force (the first rule
// that matches the request's features, else the rules' default; 64 without
// rules), the user priority from a hash of the user id (UserPriority), of
// the request id when there is no user id, random when there is neither.
// A nil *Edge uses the defaults.
type Edge struct {
	// Rules give business priorities (nil: none).
	Rules *PriorityRules
	// UserIDKey and RequestIDKey are the header or metainfo keys (lower
	// case) the ids are read from (defaults x-user-id, x-request-id).
	UserIDKey, RequestIDKey string
}

// Assign is the priority of the request f, at now.
func (e *Edge) Assign(f PriorityFeatures, now time.Time) Priority {
	var rules *PriorityRules
	userKey, reqKey := DefaultUserIDKey, DefaultRequestIDKey
	if e != nil {
		rules = e.Rules
		if e.UserIDKey != "" {
			userKey = e.UserIDKey
		}
		if e.RequestIDKey != "" {
			reqKey = e.RequestIDKey
		}
	}
	p := Priority{}
	p.Business, _ = rules.Priority(f)
	id := ""
	if f.Header != nil {
		if id = f.Header(userKey); id == "" {
			id = f.Header(reqKey)
		}
	}
	if id == "" {
		p.User = rand.Int32N(UserPriorities)
	} else {
		p.User = UserPriority(id, now)
	}
	return p
}
