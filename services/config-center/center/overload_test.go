package center_test

import (
	"encoding/json"
	"testing"
)

const overloadV1 = `{"queue_time_ms": 50, "cpu": 0.9, "shed_step": 0.1, "user_id_key": "x-uid"}`

// Every bad overload document answers 400 naming the field and stores
// nothing; a good one is stored with history.
func TestOverloadKnobsRefusedWithTheField(t *testing.T) {
	_, _, cc := setup(t, nil)
	path := "/v1/configs/overload/comment-svc"
	put := cc.do("PUT", path, overloadV1)
	if put.status != 200 {
		t.Fatalf("PUT a good document: %s", put)
	}
	rev := put.header.Get("ETag")
	for _, tc := range []struct {
		name, doc, code, field string
	}{
		{"not an object", `[1]`, "invalid_type", ""},
		{"unknown field", `{"cpu": 0.9, "overload_cpu": 0.9}`, "unknown_field", "overload_cpu"},
		{"queue time zero", `{"queue_time_ms": 0}`, "out_of_range", "queue_time_ms"},
		{"cpu above 1", `{"cpu": 1.5}`, "out_of_range", "cpu"},
		{"negative timeout ratio", `{"timeout_ratio": -0.1}`, "out_of_range", "timeout_ratio"},
		{"shed step above 1", `{"shed_step": 2}`, "out_of_range", "shed_step"},
		{"recover step zero", `{"recover_step": 0}`, "out_of_range", "recover_step"},
		{"cpu a string", `{"cpu": "high"}`, "invalid_type", "cpu"},
		{"upper-case key", `{"user_id_key": "X-User"}`, "invalid_value", "user_id_key"},
		{"key with a space", `{"request_id_key": "x request"}`, "invalid_value", "request_id_key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := cc.do("PUT", path, tc.doc, "If-Match", rev)
			if code, field := r.errorField(); r.status != 400 || code != tc.code || field != tc.field {
				t.Fatalf("%s: want 400 %s on %q", r, tc.code, tc.field)
			}
			g := cc.do("GET", path, "")
			if g.status != 200 || g.header.Get("ETag") != rev || !sameJSON(t, documentOf(t, g), []byte(overloadV1)) {
				t.Fatalf("after a refused write: %s", g)
			}
			if n := historyLen(t, cc, path); n != 1 {
				t.Fatalf("%d versions after a refused write", n)
			}
		})
	}
	v2 := `{"cpu": 0.8}`
	if r := cc.do("PUT", path, v2, "If-Match", rev); r.status != 200 {
		t.Fatalf("PUT v2: %s", r)
	}
	if n := historyLen(t, cc, path); n != 2 {
		t.Fatalf("%d versions, want 2", n)
	}
	var got map[string]any
	if err := json.Unmarshal(documentOf(t, cc.do("GET", path, "")), &got); err != nil || got["cpu"] != 0.8 {
		t.Fatalf("document %v", got)
	}
}
