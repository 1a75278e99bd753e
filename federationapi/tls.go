package federationapi

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"sync"
	"time"

	"maunium.net/go/mautrix/federation"

	"hearth/config"
)

// ListenerTLSConfig returns the TLS configuration of the federation listener
// (Server-Server API, "TLS"): the configured certificate and key, re-read when the
// files change (so a renewed certificate is picked up without a restart), or a
// self-signed certificate for the server name, generated at first start next to
// the signing key.
func ListenerTLSConfig(cfg *config.Config) (*tls.Config, error) {
	certFile, keyFile, selfSigned := cfg.FederationTLSFiles()
	if selfSigned {
		if err := ensureSelfSigned(certFile, keyFile, cfg.ServerName); err != nil {
			return nil, err
		}
	}
	r := &certReloader{certFile: certFile, keyFile: keyFile}
	if err := r.load(); err != nil {
		return nil, err
	}
	if selfSigned {
		slog.Warn("federation listener uses a self-signed certificate: other servers will not federate with it unless they skip verification",
			"cert", certFile)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.get}, nil
}

// certReloader serves a certificate from files, reloading them when their
// modification time changes (checked at most once a minute).
type certReloader struct {
	certFile, keyFile string

	mu        sync.Mutex
	cert      *tls.Certificate
	modTime   time.Time
	checkedAt time.Time
}

func (r *certReloader) load() error {
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("loading federation TLS certificate: %w", err)
	}
	st, err := os.Stat(r.certFile)
	if err != nil {
		return fmt.Errorf("loading federation TLS certificate: %w", err)
	}
	r.mu.Lock()
	r.cert, r.modTime, r.checkedAt = &cert, st.ModTime(), time.Now()
	r.mu.Unlock()
	return nil
}

func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	cert := r.cert
	stale := time.Since(r.checkedAt) > time.Minute
	if stale {
		r.checkedAt = time.Now()
	}
	modTime := r.modTime
	r.mu.Unlock()
	if stale {
		if st, err := os.Stat(r.certFile); err == nil && !st.ModTime().Equal(modTime) {
			if err := r.load(); err != nil {
				slog.Error("reloading federation TLS certificate, keeping the old one", "err", err)
			} else {
				slog.Info("reloaded federation TLS certificate", "cert", r.certFile)
				r.mu.Lock()
				cert = r.cert
				r.mu.Unlock()
			}
		}
	}
	return cert, nil
}

// ensureSelfSigned writes a self-signed certificate for serverName's host unless
// both files exist already.
func ensureSelfSigned(certFile, keyFile, serverName string) error {
	_, errC := os.Stat(certFile)
	_, errK := os.Stat(keyFile)
	if errC == nil && errK == nil {
		return nil
	}
	host, _, ok := federation.ParseServerName(serverName)
	if !ok {
		host = serverName
	}
	certPEM, keyPEM, err := makeCertificate(host, nil, nil, time.Now().AddDate(10, 0, 0))
	if err != nil {
		return fmt.Errorf("generating self-signed certificate: %w", err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return fmt.Errorf("writing self-signed certificate key: %w", err)
	}
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		return fmt.Errorf("writing self-signed certificate: %w", err)
	}
	slog.Info("generated a self-signed federation TLS certificate", "cert", certFile, "host", host)
	return nil
}

// makeCertificate makes a certificate for host (a DNS name or IP address), signed
// by parent/parentKey, or self-signed when parent is nil. It returns PEM blocks.
func makeCertificate(host string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, notAfter time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent, parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

// clientTLSConfig is the TLS configuration of outbound requests: the system trust
// store plus the configured extra CAs, or no verification when configured so.
func clientTLSConfig(fc *config.Federation, resolve func(string) string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: fc.SkipVerify} //nolint:gosec // an explicit, documented testing switch
	if fc.SkipVerify {
		slog.Warn("federation.skip_verify is on: other servers' certificates are not verified")
		return tc, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if fc.CAFile != "" {
		b, err := os.ReadFile(resolve(fc.CAFile))
		if err != nil {
			return nil, fmt.Errorf("reading federation.ca_file: %w", err)
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, errors.New("federation.ca_file holds no PEM certificates")
		}
	}
	tc.RootCAs = pool
	return tc, nil
}
