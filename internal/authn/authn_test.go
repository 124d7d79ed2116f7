package authn

import (
	"encoding/json"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/etcdx"
)

func event(t *testing.T, rec api.StoredToken) etcdx.Event {
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	return etcdx.Event{Key: "/p/tokens/" + rec.ID, Value: b}
}

// Who a credential is, from each kind, and why one is refused.
func TestVerify(t *testing.T) {
	now := time.Now()
	v := NewVerifier([]Operator{{Token: "ops-secret", Name: "ops", Role: RoleReader}})
	v.now = func() time.Time { return now }
	live, liveTok := NewToken(DataPlane("comment-svc", "admin"), time.Hour, now)
	old, oldTok := NewToken(DataPlane("comment-svc", "admin"), time.Minute, now.Add(-time.Hour))
	owner, ownerTok := NewToken(api.TokenInfo{Operator: "alice", Role: RoleWriter, Services: []string{"comment-svc"}}, time.Hour, now)
	v.Reset([]etcdx.Event{event(t, live), event(t, old), event(t, owner)}, 1)

	check := func(header, wantName, wantCode string) Identity {
		t.Helper()
		id, fe := v.Verify(header)
		switch {
		case wantCode != "" && (fe == nil || fe.Code != wantCode || fe.Field != api.AuthorizationHeader):
			t.Errorf("%q: %+v %v, want %s", header, id, fe, wantCode)
		case wantCode == "" && (fe != nil || id.Name() != wantName):
			t.Errorf("%q: %+v %v, want %s", header, id, fe, wantName)
		}
		return id
	}
	check("", "", api.CodeUnauthenticated)
	check("Basic ops-secret", "", api.CodeUnauthenticated)
	check("Bearer wrong", "", api.CodeUnauthenticated)
	if id := check("Bearer ops-secret", "ops", ""); id.MayWriteFor("comment-svc") || !id.MayReadFor("x") {
		t.Errorf("a reader of the flags: %+v", id)
	}
	if id := check("Bearer "+liveTok, "service:comment-svc", ""); !id.MayActFor("comment-svc") || id.MayActFor("pay-svc") || id.IsOperator() {
		t.Errorf("a data plane: %+v", id)
	}
	check("Bearer "+oldTok, "", api.CodeExpired)
	check("Bearer "+liveTok[:len(liveTok)-1]+"x", "", api.CodeUnauthenticated) // the secret altered
	if id := check("Bearer "+ownerTok, "alice", ""); !id.MayWriteFor("comment-svc") || id.MayWriteFor("pay-svc") || id.MayWrite() {
		t.Errorf("an owner of comment-svc: %+v", id)
	}
	// Revoked: gone from the mirror.
	v.Apply([]etcdx.Event{{Key: "/p/tokens/" + live.ID, Deleted: true}}, 2)
	check("Bearer "+liveTok, "", api.CodeUnauthenticated)
}

// A token the mirror does not hold yet is looked up, within a bound.
func TestVerifyLooksUpANewToken(t *testing.T) {
	now := time.Now()
	fresh, freshTok := NewToken(DataPlane("comment-svc", "admin"), time.Hour, now)
	v := NewVerifier(nil)
	lookups := 0
	v.lookup = func(id string) (api.StoredToken, int64, bool) {
		lookups++
		return fresh, 10, id == fresh.ID
	}
	v.lookups = rate.NewLimiter(0, 2) // two, then none
	if _, fe := v.Verify("Bearer " + freshTok); fe != nil {
		t.Fatalf("a token issued a moment ago: %v", fe)
	}
	if _, fe := v.Verify("Bearer " + api.TokenPrefix + "made.up"); fe == nil {
		t.Fatal("a made-up token passed")
	}
	if _, fe := v.Verify("Bearer " + api.TokenPrefix + "made.up"); fe == nil || lookups != 2 {
		t.Fatalf("beyond the bound: %v after %d lookups, want refused after 2", fe, lookups)
	}
}

// A looked-up token is kept only while the mirror is behind the read: past
// it, the mirror's word (revoked, if it does not hold the token) stands.
func TestLookupDoesNotOutliveARevocation(t *testing.T) {
	now := time.Now()
	tok, secret := NewToken(DataPlane("comment-svc", "admin"), time.Hour, now)
	v := NewVerifier(nil)
	lookups := 0
	v.lookup = func(string) (api.StoredToken, int64, bool) { lookups++; return tok, 10, true }
	v.lookups = rate.NewLimiter(rate.Inf, 1)
	v.Reset(nil, 20) // the mirror has seen revision 20, without the token
	for range 2 {
		if _, fe := v.Verify("Bearer " + secret); fe != nil {
			t.Fatal(fe)
		}
	}
	if lookups != 2 {
		t.Fatalf("%d lookups: a read older than the mirror was kept", lookups)
	}
	v.Reset(nil, 5) // the mirror is behind the read: kept
	for range 2 {
		_, _ = v.Verify("Bearer " + secret)
	}
	if lookups != 3 {
		t.Fatalf("%d lookups, want 3: a read newer than the mirror is kept", lookups)
	}
}
