package config

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
)

// Federation configures the server-server API (federationapi).
type Federation struct {
	// Enabled serves the federation API and sends to other servers.
	Enabled bool `yaml:"enabled"`
	// TLSCert and TLSKey are PEM files for the federation listener. Both empty: a
	// self-signed certificate is generated at first start next to the signing key
	// (fine for testing or behind a TLS-terminating reverse proxy, not for direct
	// federation, which requires a certificate other servers trust).
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// CAFile is an extra PEM bundle of CAs trusted for outbound requests, on top of
	// the system trust store.
	CAFile string `yaml:"ca_file"`
	// SkipVerify turns off certificate verification of outbound requests. Testing
	// only.
	SkipVerify bool `yaml:"skip_verify"`
	// AllowedCIDRs are networks outbound requests may reach even when DeniedCIDRs
	// lists them (e.g. 127.0.0.0/8 for a test federation on one machine).
	AllowedCIDRs []string `yaml:"allowed_cidrs"`
	// DeniedCIDRs are networks outbound requests must not reach (SSRF protection).
	DeniedCIDRs []string `yaml:"denied_cidrs"`
	// KeyNotaries are servers asked for another server's signing keys when that
	// server cannot be reached directly.
	KeyNotaries []KeyNotary `yaml:"key_notaries"`
}

// KeyNotary is a trusted key server (Server-Server API, "Querying Keys Through
// Another Server").
type KeyNotary struct {
	ServerName string `yaml:"server_name"`
	// VerifyKeys maps key IDs ("ed25519:abc") to unpadded base64 public keys. Empty:
	// the notary's own keys are fetched from it directly.
	VerifyKeys map[string]string `yaml:"verify_keys"`
}

// DefaultDeniedCIDRs are the networks outbound federation requests may not reach by
// default: loopback, private, link-local, CGNAT, multicast and other special ranges.
var DefaultDeniedCIDRs = []string{
	"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
	"172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
	"198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
	"::/128", "::1/128", "64:ff9b:1::/48", "100::/64", "2001:db8::/32", "fc00::/7", "fe80::/10", "ff00::/8",
}

func defaultFederation() Federation {
	return Federation{Enabled: true, DeniedCIDRs: append([]string(nil), DefaultDeniedCIDRs...)}
}

// validate reports every problem of the federation section through bad.
func (f *Federation) validate(bad func(key, format string, args ...any)) {
	if (f.TLSCert == "") != (f.TLSKey == "") {
		bad("federation.tls_cert", "tls_cert and tls_key must be set together (both empty: a self-signed certificate is generated)")
	}
	for i, c := range f.AllowedCIDRs {
		if _, err := netip.ParsePrefix(c); err != nil {
			bad(fmt.Sprintf("federation.allowed_cidrs[%d]", i), "expected a CIDR such as 127.0.0.0/8, got %q", c)
		}
	}
	for i, c := range f.DeniedCIDRs {
		if _, err := netip.ParsePrefix(c); err != nil {
			bad(fmt.Sprintf("federation.denied_cidrs[%d]", i), "expected a CIDR such as 10.0.0.0/8, got %q", c)
		}
	}
	for i, n := range f.KeyNotaries {
		key := fmt.Sprintf("federation.key_notaries[%d]", i)
		if err := ValidateServerName(n.ServerName); err != nil {
			bad(key+".server_name", "%v", err)
		}
		for kid, pub := range n.VerifyKeys {
			if !strings.HasPrefix(kid, "ed25519:") || len(kid) == len("ed25519:") {
				bad(key+".verify_keys", "key ID %q: expected ed25519:<version>", kid)
			}
			if b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(pub, "=")); err != nil || len(b) != ed25519.PublicKeySize {
				bad(key+".verify_keys", "key %s: expected an unpadded base64 ed25519 public key", kid)
			}
		}
	}
}

// FederationTLSFiles returns the certificate and key files of the federation
// listener: the configured ones, or those of the self-signed certificate kept next
// to the signing key, and whether they are the self-signed ones.
func (c *Config) FederationTLSFiles() (cert, key string, selfSigned bool) {
	if c.Federation.TLSCert != "" {
		return c.Resolve(c.Federation.TLSCert), c.Resolve(c.Federation.TLSKey), false
	}
	dir := filepath.Dir(c.Resolve(c.SigningKeyPath))
	return filepath.Join(dir, "federation-selfsigned.crt"), filepath.Join(dir, "federation-selfsigned.key"), true
}
