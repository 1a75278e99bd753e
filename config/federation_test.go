package config

import (
	"strings"
	"testing"
)

func TestFederationSection(t *testing.T) {
	c, err := Parse([]byte(`
federation:
  tls_cert: cert.pem
  tls_key: key.pem
  allowed_cidrs: ["127.0.0.0/8", "::1/128"]
  key_notaries:
    - server_name: notary.example
      verify_keys:
        "ed25519:auto": "Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw"
    - server_name: other.example:8448
`))
	if err != nil {
		t.Fatal(err)
	}
	f := c.Federation
	if !f.Enabled || f.TLSCert != "cert.pem" || len(f.AllowedCIDRs) != 2 || len(f.DeniedCIDRs) != len(DefaultDeniedCIDRs) {
		t.Fatalf("federation = %+v", f)
	}
	if len(f.KeyNotaries) != 2 || f.KeyNotaries[0].VerifyKeys["ed25519:auto"] == "" || f.KeyNotaries[1].ServerName != "other.example:8448" {
		t.Fatalf("notaries = %+v", f.KeyNotaries)
	}
	if cert, _, self := c.FederationTLSFiles(); self || cert != "cert.pem" {
		t.Fatalf("TLS files = %s %v", cert, self)
	}
	c2 := Default()
	c2.SigningKeyPath = "/data/signing.key"
	if cert, key, self := c2.FederationTLSFiles(); !self || cert != "/data/federation-selfsigned.crt" || key != "/data/federation-selfsigned.key" {
		t.Fatalf("self-signed files = %s %s %v", cert, key, self)
	}
}

func TestFederationValidation(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"federation:\n  tls_cert: a.pem\n", "federation.tls_cert"},
		{"federation:\n  allowed_cidrs: [\"10.0.0.0\"]\n", "federation.allowed_cidrs[0]"},
		{"federation:\n  denied_cidrs: [\"10.0.0.0/8\", \"nope\"]\n", "federation.denied_cidrs[1]"},
		{"federation:\n  allowed_cidrs: \"127.0.0.0/8\"\n", "expected a list"},
		{"federation:\n  key_notaries:\n    - server_name: \"bad name\"\n", "federation.key_notaries[0].server_name"},
		{"federation:\n  key_notaries:\n    - server_name: a.example\n      verify_keys: {\"ed25519:x\": \"short\"}\n", "federation.key_notaries[0].verify_keys"},
		{"federation:\n  key_notaries:\n    - server_name: a.example\n      verify_keys: [\"x\"]\n", "expected a mapping"},
		{"federation:\n  key_notaries:\n    - server_name: a.example\n      bogus: 1\n", "federation.key_notaries[0].bogus"},
	} {
		_, err := Parse([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want mention of %q", tc.yaml, err, tc.want)
		}
	}
}

func TestGeneratedKeyIDsAreSpecCompliant(t *testing.T) {
	for i := 0; i < 300; i++ {
		k, err := GenerateSigningKey()
		if err != nil {
			t.Fatal(err)
		}
		ver := strings.TrimPrefix(k.ID, "ed25519:")
		for _, c := range ver {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
				t.Fatalf("key ID %q has %q, outside [a-zA-Z0-9_]", k.ID, c)
			}
		}
	}
}
