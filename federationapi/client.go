package federationapi

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/internal/version"
)

// maxResponseBytes bounds federation response bodies (a send_join of a big room is
// tens of megabytes).
const maxResponseBytes = 256 << 20

type ctxKeyAddrs struct{}

// transport is the http.RoundTripper of outbound federation requests: it resolves
// "matrix-federation://<server name>/…" URLs by server discovery, sends them over
// HTTPS with the Host header and TLS server name the spec requires, and dials the
// discovered addresses in order through the network guard.
type transport struct {
	resolver *resolver
	inner    *http.Transport
	dialer   *net.Dialer
}

func newTransport(fc *config.Federation, resolveFile func(string) string) (*transport, *http.Client, error) {
	guard, err := newNetGuard(fc)
	if err != nil {
		return nil, nil, err
	}
	tlsConf, err := clientTLSConfig(fc, resolveFile)
	if err != nil {
		return nil, nil, err
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: guard.control}
	// .well-known lookups: plain HTTPS through the same guard, following redirects
	// (net/http stops after 10, which also ends loops).
	wkClient := &http.Client{
		Transport: &http.Transport{
			DialContext:         dialer.DialContext,
			TLSClientConfig:     tlsConf.Clone(),
			TLSHandshakeTimeout: 10 * time.Second,
			MaxIdleConnsPerHost: 1,
			IdleConnTimeout:     30 * time.Second,
		},
		Timeout: 20 * time.Second,
	}
	t := &transport{resolver: newResolver(wkClient), dialer: dialer}
	t.inner = &http.Transport{
		DialContext:           t.dialResolved,
		TLSClientConfig:       tlsConf,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 2 * time.Minute,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   8,
	}
	return t, &http.Client{
		Transport: t,
		// Federation requests are not redirected.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, nil
}

// RoundTrip implements http.RoundTripper.
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "matrix-federation" {
		return nil, fmt.Errorf("federation transport: unsupported scheme %q", req.URL.Scheme)
	}
	res, err := t.resolver.resolve(req.Context(), req.URL.Host)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", req.URL.Host, err)
	}
	out := req.Clone(context.WithValue(req.Context(), ctxKeyAddrs{}, res.addrs))
	out.URL.Scheme = "https"
	out.URL.Host = res.hostHeader
	out.Host = res.hostHeader
	// mautrix's federation client sends JSON bodies without a Content-Type;
	// Synapse-style servers (and Complement's) refuse those with 400.
	if out.Body != nil && out.Body != http.NoBody && out.Header.Get("Content-Type") == "" {
		out.Header.Set("Content-Type", "application/json")
	}
	return t.inner.RoundTrip(out)
}

// dialResolved dials the discovered addresses of the request in order, ignoring the
// address net/http derived from the Host header.
func (t *transport) dialResolved(ctx context.Context, network, _ string) (net.Conn, error) {
	addrs, _ := ctx.Value(ctxKeyAddrs{}).([]string)
	if len(addrs) == 0 {
		return nil, errNoAddress
	}
	var errs []error
	for _, a := range addrs {
		c, err := t.dialer.DialContext(ctx, network, a)
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// newMautrixClient makes mautrix's federation client (request building, X-Matrix
// signing, response decoding) over the transport.
func newMautrixClient(serverName string, key *config.SigningKey, hc *http.Client) *federation.Client {
	pub := base64.RawStdEncoding.EncodeToString(key.Public())
	return &federation.Client{
		HTTP:       hc,
		ServerName: serverName,
		UserAgent:  "Hearth/" + version.Version,
		Key:        &federation.SigningKey{ID: id.KeyID(key.ID), Pub: id.SigningKey(pub), Priv: key.PrivateKey},
		AllowServer: func(name string) bool {
			// Never send federation requests to ourselves.
			return name != serverName
		},
		ResponseSizeLimit: maxResponseBytes,
	}
}

// httpStatus returns the HTTP status of a failed federation request, or 0 when no
// response arrived (network error, refused address, bad certificate).
func httpStatus(err error) int {
	var he mautrix.HTTPError
	if errors.As(err, &he) && he.Response != nil {
		return he.Response.StatusCode
	}
	return 0
}

// remoteErrcode returns the Matrix errcode of a failed federation request, if any.
func remoteErrcode(err error) string {
	var he mautrix.HTTPError
	if errors.As(err, &he) && he.RespError != nil {
		return he.RespError.ErrCode
	}
	return ""
}
