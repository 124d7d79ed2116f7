package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/testenv"
	"github.com/sextant-mesh/sextant/services/config-center/centertest"
)

// sextant token create, list and revoke against a real config-center, as
// an operator runs them.
func TestTokenCommands(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	cc := centertest.Start(t, etcd, testenv.Prefix(t), nil)
	run := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := token(append(args, "--config-center", cc.Addr(), "--token", centertest.AdminToken), &out, &errOut)
		return out.String(), err
	}
	created, err := run("create", "--service", "comment-svc", "--ttl", "1h")
	if err != nil || !strings.HasPrefix(created, api.TokenPrefix) {
		t.Fatalf("create: %q %v", created, err)
	}
	id, _, _ := api.ParseToken(strings.TrimSpace(created))
	if listed, err := run("list", "--service", "comment-svc"); err != nil || !strings.Contains(listed, id) {
		t.Fatalf("list: %q %v", listed, err)
	}
	if _, err := run("revoke", id); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if listed, _ := run("list"); strings.Contains(listed, id) {
		t.Fatalf("listed after its revocation: %q", listed)
	}
	if _, err := run("create", "--service", "bad name"); err == nil || !strings.Contains(err.Error(), "service") {
		t.Fatalf("a bad service name: %v", err)
	}
	var out bytes.Buffer
	if err := token([]string{"create", "--service", "x", "--config-center", cc.Addr(), "--token", "wrong"}, &out, &out); err == nil ||
		!strings.Contains(err.Error(), "401") {
		t.Fatalf("a wrong operator token: %v", err)
	}
}
