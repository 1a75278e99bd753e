package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"hearth/config"
)

// setup is what prepare needs to know about the container.
type setup struct {
	ServerName string
	DataDir    string
	CACert     string // PEM CA certificate; missing: hearth's self-signed certificate is used
	CAKey      string // PEM private key of CACert
	AppSvcDir  string
	LogLevel   string // debug, info, warn or error; empty or unknown: info
	Now        time.Time
}

// prepared is the outcome of prepare.
type prepared struct {
	ConfigPath    string
	NewSigningKey bool // the signing key was created by this start
	Config        *config.Config
}

// prepare makes DataDir ready for hearth: a signing key (created once, then kept),
// a TLS certificate for ServerName issued by the CA, and a config written afresh.
func prepare(s setup) (*prepared, error) {
	if err := config.ValidateServerName(s.ServerName); err != nil {
		return nil, fmt.Errorf("SERVER_NAME: %w", err)
	}
	keyPath := filepath.Join(s.DataDir, "signing.key")
	created, err := ensureSigningKey(keyPath)
	if err != nil {
		return nil, err
	}

	cfg := complementConfig(s.ServerName, s.LogLevel)
	cfg.SigningKeyPath = keyPath
	cfg.Database = filepath.Join(s.DataDir, "hearth.db")
	cfg.Media.StoragePath = filepath.Join(s.DataDir, "media")

	caCert, errCert := os.ReadFile(s.CACert)
	caKey, errKey := os.ReadFile(s.CAKey)
	switch {
	case errCert == nil && errKey == nil:
		certPEM, keyPEM, err := issueCert(caCert, caKey, s.ServerName, s.Now)
		if err != nil {
			return nil, err
		}
		certPath := filepath.Join(s.DataDir, "federation.crt")
		tlsKeyPath := filepath.Join(s.DataDir, "federation.key")
		if err := writeFileAtomic(certPath, certPEM, 0o644); err != nil {
			return nil, err
		}
		if err := writeFileAtomic(tlsKeyPath, keyPEM, 0o600); err != nil {
			return nil, err
		}
		cfg.Federation.TLSCert = certPath
		cfg.Federation.TLSKey = tlsKeyPath
		cfg.Federation.CAFile = s.CACert
	case errors.Is(errCert, os.ErrNotExist) && errors.Is(errKey, os.ErrNotExist):
		slog.Warn("no Complement CA found; federation uses a self-signed certificate", "ca", s.CACert)
	default:
		return nil, fmt.Errorf("reading the Complement CA: %w", errors.Join(errCert, errKey))
	}

	// Application services Complement registers (blueprints with
	// ApplicationServices) are copied here before the container starts.
	regs, err := appServiceRegistrations(s.AppSvcDir)
	if err != nil {
		return nil, err
	}
	cfg.AppServiceConfigFiles = regs

	b, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("encoding config: %w", err)
	}
	b = append([]byte("# Written by the Complement entrypoint at every start; edits are lost.\n"), b...)
	// What we write must load, with hearth's own strict decoder, and so must
	// the registrations it names (paths are absolute).
	check, err := config.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("generated config does not load: %w", err)
	}
	if err := check.LoadAppServices(); err != nil {
		return nil, fmt.Errorf("application service registrations do not load: %w", err)
	}
	if len(regs) > 0 {
		slog.Info("application services registered", "files", regs)
	}
	cfgPath := filepath.Join(s.DataDir, "hearth.yaml")
	if err := writeFileAtomic(cfgPath, b, 0o600); err != nil {
		return nil, err
	}
	return &prepared{ConfigPath: cfgPath, NewSigningKey: created, Config: cfg}, nil
}

// complementConfig is hearth's configuration under Complement for serverName.
func complementConfig(serverName, logLevel string) *config.Config {
	cfg := config.Default()
	cfg.ServerName = serverName
	cfg.PublicBaseURL = "http://" + serverName + ":8008"
	cfg.Listen = config.Listen{Client: "0.0.0.0:8008", Federation: "0.0.0.0:8448"}
	cfg.Registration = config.Registration{Open: true, SharedSecret: "complement"}
	cfg.RateLimits.Enabled = false
	// Complement's own test servers listen on the Docker host's bridge address and
	// the other homeservers on the private Docker network: allow everything.
	cfg.Federation.Enabled = true
	cfg.Federation.DeniedCIDRs = []string{}
	cfg.Federation.AllowedCIDRs = []string{"0.0.0.0/0", "::/0"}
	// Complement's media tests use the deprecated unauthenticated /_matrix/media/v3
	// endpoints as well as the authenticated ones, and preview pages served by the
	// test process on the Docker host.
	cfg.Media.LegacyUnauthenticated = true
	cfg.Media.URLPreview.Enabled = true
	cfg.Media.URLPreview.DeniedCIDRs = []string{}
	cfg.Media.URLPreview.AllowedCIDRs = []string{"0.0.0.0/0", "::/0"}
	switch logLevel {
	case "debug", "info", "warn", "error":
		cfg.Log.Level = logLevel
	default:
		cfg.Log.Level = "info"
	}
	cfg.Log.Format = "text"
	return cfg
}

// ensureSigningKey creates the signing key at path unless one is there already,
// which it checks is readable. It reports whether it created one.
func ensureSigningKey(path string) (bool, error) {
	if _, err := os.Stat(path); err == nil {
		if _, err := config.ReadSigningKey(path); err != nil {
			return false, err
		}
		return false, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("checking signing key: %w", err)
	}
	key, err := config.GenerateSigningKey()
	if err != nil {
		return false, fmt.Errorf("generating signing key: %w", err)
	}
	if err := config.WriteSigningKey(path, key); err != nil {
		return false, err
	}
	return true, nil
}

// issueCert makes a fresh P-256 key and a server certificate for serverName (a DNS
// name or IP literal, without port) signed by the PEM CA certificate and key.
func issueCert(caCertPEM, caKeyPEM []byte, serverName string, now time.Time) (certPEM, keyPEM []byte, err error) {
	caCert, err := parseCertPEM(caCertPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("reading CA certificate: %w", err)
	}
	caKey, err := parseKeyPEM(caKeyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("reading CA key: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating TLS key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("generating serial number: %w", err)
	}
	host := hostOf(serverName)
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: host, Organization: []string{"Hearth under Complement"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("signing TLS certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding TLS key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// hostOf strips a port and IPv6 brackets from a server name.
func hostOf(serverName string) string {
	if h, _, err := net.SplitHostPort(serverName); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(serverName, "["), "]")
}

func parseCertPEM(b []byte) (*x509.Certificate, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("no CERTIFICATE block")
		}
		if blk.Type == "CERTIFICATE" {
			return x509.ParseCertificate(blk.Bytes)
		}
	}
}

// parseKeyPEM reads a PKCS#1 RSA, SEC 1 EC or PKCS#8 private key.
func parseKeyPEM(b []byte) (crypto.Signer, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("no private key block")
		}
		switch blk.Type {
		case "RSA PRIVATE KEY":
			return x509.ParsePKCS1PrivateKey(blk.Bytes)
		case "EC PRIVATE KEY":
			return x509.ParseECPrivateKey(blk.Bytes)
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
			if err != nil {
				return nil, err
			}
			switch k := k.(type) {
			case *rsa.PrivateKey:
				return k, nil
			case *ecdsa.PrivateKey:
				return k, nil
			case ed25519.PrivateKey:
				return k, nil
			default:
				return nil, fmt.Errorf("unsupported key type %T", k)
			}
		}
	}
}

// writeFileAtomic replaces path with b, so a crash never leaves half a file.
func writeFileAtomic(path string, b []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, perm); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
