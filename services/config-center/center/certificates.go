package center

import (
	"bytes"
	"context"
	"errors"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/protocol/consts"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sextant-mesh/sextant/api"
	"github.com/sextant-mesh/sextant/internal/authn"
	"github.com/sextant-mesh/sextant/internal/httpx"
	"github.com/sextant-mesh/sextant/internal/jsonx"
	"github.com/sextant-mesh/sextant/internal/pki"
)

// certificateAPI issues workload certificates (docs/security.md): the
// caller proves who it is with its credential, and the certificate is of
// that identity, whatever names the CSR asks for. Each issuance is audited.
type certificateAPI struct {
	ca      *pki.Current
	canSign bool // this config-center holds the CA key file
	ttl     time.Duration
	etcd    *clientv3.Client
	timeout time.Duration
	store   *store // for the audit records
}

const maxCertificateRequest = 16 << 10

func (ca *certificateAPI) issue(ctx context.Context, c *app.RequestContext) {
	var body bytes.Buffer
	if fe := httpx.ReadBody(c, &body, maxCertificateRequest); fe != nil {
		httpx.WriteError(c, statusOfBodyError(fe), fe)
		return
	}
	var req api.CertificateRequest
	if fe := jsonx.DecodeObject(body.Bytes(), &req); fe != nil {
		httpx.WriteError(c, consts.StatusBadRequest, fe)
		return
	}
	who := authn.From(c)
	id, fe := ca.identity(who, req)
	if fe != nil {
		status := consts.StatusBadRequest
		if fe.Code == api.CodeForbidden {
			status = consts.StatusForbidden
		}
		httpx.WriteError(c, status, fe)
		return
	}
	ttl := ca.ttl
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d < pki.MinLeafTTL || d > ca.ttl {
			httpx.WriteError(c, consts.StatusBadRequest, api.Errorf("ttl", api.CodeOutOfRange,
				"must be a duration between %s and %s (--cert-ttl)", pki.MinLeafTTL, ca.ttl))
			return
		}
		ttl = d
	}
	if req.CSR == "" {
		httpx.WriteError(c, consts.StatusBadRequest, api.Errorf("csr", api.CodeMissingField, "csr is required: a PEM CERTIFICATE REQUEST"))
		return
	}
	csr, err := pki.ParseCSR([]byte(req.CSR))
	if err != nil {
		httpx.WriteError(c, consts.StatusBadRequest, api.Errorf("csr", api.CodeInvalidValue, "%v", err))
		return
	}
	a := ca.ca.Authority()
	if !ca.canSign || a == nil {
		c.Response.Header.Set("Retry-After", "1")
		httpx.WriteError(c, consts.StatusServiceUnavailable, api.Errorf("", "unavailable",
			"this config-center issues no certificates: it was started without --ca-key-file"))
		return
	}
	id.TrustDomain = a.TrustDomain()
	now := time.Now()
	cert, err := a.Issue(csr.PublicKey, pki.Leaf{ID: id, TTL: ttl}, now)
	if err != nil {
		status := consts.StatusInternalServerError
		if errors.Is(err, pki.ErrBadCSR) {
			status = consts.StatusBadRequest
		}
		httpx.WriteError(c, status, api.Errorf("csr", api.CodeInvalidValue, "%v", err))
		return
	}
	serial := pki.SerialOf(cert)
	detail := "certificate " + serial + " for " + id.String() + " expires " + cert.NotAfter.UTC().Format(time.RFC3339)
	if who.ServiceAccount {
		detail += " (service-account token of " + who.Namespace + "/" + who.Service + ")"
	}
	audit := api.AuditEntry{AtMs: now.UnixMilli(), Who: who.Name(), Action: "certificate-issue", Service: id.Service, Detail: detail}
	// The audit record is written before the certificate is handed out: no
	// record, no certificate.
	actx, cancel := context.WithTimeout(ctx, ca.timeout)
	defer cancel()
	if _, err := ca.etcd.Txn(actx).Then(ca.store.auditOp(audit)).Commit(); err != nil {
		unavailable(c, err)
		return
	}
	c.JSON(consts.StatusCreated, api.CertificateIssued{
		SpiffeID: id.String(), Serial: serial,
		NotBeforeMs: cert.NotBefore.UnixMilli(), ExpiresAtMs: cert.NotAfter.UnixMilli(),
		CertificatePEM: string(pki.EncodePEM(cert)), BundlePEM: string(a.BundlePEM()),
	})
}

// identity is the identity a caller may have a certificate of: a data
// plane's own (its namespace, "default" when it has none), or the one an
// operator that may write names.
func (ca *certificateAPI) identity(who authn.Identity, req api.CertificateRequest) (pki.ID, *api.FieldError) {
	if fe := api.Name("service", req.Service, false); fe != nil {
		return pki.ID{}, fe
	}
	if fe := api.Name("namespace", req.Namespace, false); fe != nil {
		return pki.ID{}, fe
	}
	if who.Namespace == api.ControlPlaneNamespace {
		// A service account of the namespace Sextant runs in, say.
		return pki.ID{}, api.Errorf(api.AuthorizationHeader, api.CodeForbidden,
			"%s is of %q, the control plane's own namespace: its certificates are not issued here", who.Name(), api.ControlPlaneNamespace)
	}
	if req.Namespace == api.ControlPlaneNamespace {
		// Sextant's services issue their own (the Kitex hops trust them).
		return pki.ID{}, api.Errorf("namespace", api.CodeInvalidValue, "%q is the control plane's own namespace", api.ControlPlaneNamespace)
	}
	if who.IsOperator() {
		if !who.MayWrite() {
			return pki.ID{}, api.Errorf(api.AuthorizationHeader, api.CodeForbidden, "%s may read, not issue certificates", who.Name())
		}
		if req.Service == "" {
			return pki.ID{}, api.Errorf("service", api.CodeMissingField, "an operator names the service of the certificate")
		}
		return pki.ID{Namespace: orDefault(req.Namespace), Service: req.Service}, nil
	}
	switch {
	case req.Service != "" && req.Service != who.Service:
		return pki.ID{}, api.Errorf(api.AuthorizationHeader, api.CodeForbidden,
			"%s may have a certificate of its own service only, not of %s", who.Name(), req.Service)
	case req.Namespace != "" && req.Namespace != orDefault(who.Namespace):
		return pki.ID{}, api.Errorf(api.AuthorizationHeader, api.CodeForbidden,
			"%s is of namespace %s, not %s", who.Name(), orDefault(who.Namespace), req.Namespace)
	}
	return pki.ID{Namespace: orDefault(who.Namespace), Service: who.Service}, nil
}

func orDefault(namespace string) string {
	if namespace == "" {
		return pki.DefaultNamespace
	}
	return namespace
}

// bundle answers GET /v1/ca: the trust bundle, PEM.
func (ca *certificateAPI) bundle(_ context.Context, c *app.RequestContext) {
	a := ca.ca.Authority()
	if a == nil {
		httpx.WriteError(c, consts.StatusNotFound, api.Errorf("", "not_found",
			"no certificate authority yet: start a config-center with --ca-key-file"))
		return
	}
	c.Data(consts.StatusOK, "application/x-pem-file", a.BundlePEM())
}
