package center_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sextant-mesh/sextant/services/config-center/center"
)

// A service's history: 404 no_time_series without InfluxDB; with it, the
// query InfluxDB gets names the service as an escaped string literal and
// reads the weight and overload measurements back as points; bad minutes
// are a 400 naming the field.
func TestServiceHistory(t *testing.T) {
	_, _, none := setup(t, nil)
	if r := none.do("GET", "/v1/services/comment-svc/history", ""); r.status != http.StatusNotFound {
		t.Errorf("without InfluxDB: %s, want 404", r)
	} else if code, _ := r.errorField(); code != "no_time_series" {
		t.Errorf("without InfluxDB: %s, want no_time_series", r)
	}

	var asked string
	influx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked = r.URL.Query().Get("q")
		if r.URL.Path != "/query" || r.URL.Query().Get("db") != "sextant" || r.URL.Query().Get("epoch") != "ms" {
			http.Error(w, "bad query", http.StatusBadRequest)
			return
		}
		_, _ = w.Write([]byte(`{"results": [
			{"statement_id": 0, "series": [{"name": "weight", "tags": {"instance": "10.0.0.1:9000"}, "columns": ["time", "mean", "mean_1"],
				"values": [[1764500000000, 1000, 12.5], [1764500003000, 880, 14]]}]},
			{"statement_id": 1, "series": [{"name": "overload", "columns": ["time", "mean"], "values": [[1764500000000, 0.1]]}]}]}`))
	}))
	defer influx.Close()
	_, _, with := setup(t, func(c *center.Config) { c.TSDB.URL = influx.URL })
	r := with.do("GET", "/v1/services/it's-svc/history?minutes=60", "")
	want := `{"service":"it's-svc","minutes":60,"step_ms":12000,"instances":{"10.0.0.1:9000":[[1764500000000,1000,12.5],[1764500003000,880,14]]},"shed":[[1764500000000,0.1]]}`
	if r.status != http.StatusOK || !sameJSON(t, r.body, []byte(want)) {
		t.Errorf("history: %s, want %s", r, want)
	}
	if !strings.Contains(asked, `"service" = 'it\'s-svc'`) || !strings.Contains(asked, "GROUP BY time(12s)") {
		t.Errorf("query: %s", asked)
	}
	for _, m := range []string{"0", "1441", "x"} {
		if r := with.do("GET", "/v1/services/s/history?minutes="+m, ""); r.status != http.StatusBadRequest {
			t.Errorf("minutes=%s: %s, want 400", m, r)
		} else if _, field := r.errorField(); field != "minutes" {
			t.Errorf("minutes=%s: %s, want the field minutes", m, r)
		}
	}
}
