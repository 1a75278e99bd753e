package mediaapi

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"go.mau.fi/util/exhttp"

	"hearth/config"
)

// swappableTransport is an http.RoundTripper whose target can be replaced while
// requests are in flight (SetFederationTransport).
type swappableTransport struct {
	rt atomic.Pointer[roundTripperBox]
}

type roundTripperBox struct{ rt http.RoundTripper }

func newSwappableTransport(rt http.RoundTripper) *swappableTransport {
	t := &swappableTransport{}
	t.set(rt)
	return t
}

func (t *swappableTransport) set(rt http.RoundTripper) { t.rt.Store(&roundTripperBox{rt: rt}) }

// RoundTrip sends req through the current transport.
func (t *swappableTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.rt.Load().rt.RoundTrip(req)
}

// federationTLSConfig trusts the system roots plus federation.ca_file, and skips
// verification only when federation.skip_verify says so.
func federationTLSConfig(cfg *config.Config) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: cfg.Federation.SkipVerify}
	if cfg.Federation.CAFile != "" {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		pem, err := os.ReadFile(cfg.Resolve(cfg.Federation.CAFile))
		if err != nil {
			return nil, fmt.Errorf("federation.ca_file: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("federation.ca_file: no PEM certificates in %s", cfg.Federation.CAFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// federationClientSettings are the HTTP settings of the remote-media client.
func federationClientSettings(tc *tls.Config) exhttp.ClientSettings {
	return exhttp.ClientSettings{
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		TLSConfig:             tc,
	}.WithDialTimeout(dialTimeout)
}
