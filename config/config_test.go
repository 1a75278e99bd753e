package config

import (
	"strings"
	"testing"
)

func TestParseErrorsNameTheKey(t *testing.T) {
	cases := []struct {
		name, yaml, want string
	}{
		{"unknown top key", "server_nam: x\n", "server_nam (line 1): unknown key"},
		{"unknown nested key", "listen:\n  clinet: 1.2.3.4:5\n", "listen.clinet (line 2): unknown key; expected one of: client, federation"},
		{"wrong type int", "limits:\n  max_request_body_bytes: lots\n", `limits.max_request_body_bytes (line 2): expected an integer, got "lots"`},
		{"wrong type bool", "registration:\n  open: maybe\n", `registration.open (line 2): expected true or false`},
		{"mapping expected", "listen: 5\n", "listen (line 1): expected a mapping"},
		{"bad server name", "server_name: 'exa mple'\n", "server_name:"},
		{"bad port", "listen:\n  client: 127.0.0.1:99999\n", "listen.client: port must be 0–65535"},
		{"bad room version", "rooms:\n  default_version: '13'\n", "rooms.default_version: expected a room version from 1 to 12"},
		{"bad log level", "log:\n  level: loud\n", "log.level: expected one of"},
		{"empty database", "database: ''\n", "database: must not be empty"},
		{"not yaml", "a: [\n", "not valid YAML"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml))
			if err == nil {
				t.Fatalf("no error for %q", c.yaml)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not contain %q", err, c.want)
			}
		})
	}
}

func TestGeneratedConfigLoadsWithValues(t *testing.T) {
	b, err := Generate(GenerateOptions{
		ServerName: "example.org", Database: "postgres://u@h/db", ClientAddr: "127.0.0.1:8008",
		FederationAddr: "0.0.0.0:8448", OpenRegistration: true, SharedSecret: `s"cret`,
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ServerName != "example.org" || !cfg.Registration.Open || cfg.Registration.SharedSecret != `s"cret` ||
		cfg.DatabaseDSN() != "postgres://u@h/db" || cfg.Rooms.DefaultVersion != "10" {
		t.Fatalf("generated config did not round-trip: %+v", cfg)
	}
	// Every key of the struct appears in the generated file.
	for _, key := range []string{"server_name", "signing_key_path", "database", "public_base_url", "listen", "client", "federation",
		"metrics", "enabled", "registration", "open", "shared_secret", "allow_guests", "limits", "max_request_body_bytes",
		"rate_limits", "per_second", "burst", "rooms", "default_version", "well_known", "server", "log", "level", "format"} {
		if !strings.Contains(string(b), key+":") {
			t.Errorf("generated config lacks key %s", key)
		}
	}
}

func TestServerNames(t *testing.T) {
	good := []string{"example.org", "localhost:8008", "1.2.3.4", "1.2.3.4:80", "[::1]", "[::1]:8448", "hs1", "a-b.c"}
	bad := []string{"", "exa mple.org", "example.org:", "example.org:0", "example.org:123456", "[::1", "[1.2.3.4]", "ex_ample.org", "example.org:abc"}
	for _, n := range good {
		if err := ValidateServerName(n); err != nil {
			t.Errorf("%q rejected: %v", n, err)
		}
	}
	for _, n := range bad {
		if err := ValidateServerName(n); err == nil {
			t.Errorf("%q accepted", n)
		}
	}
}

func TestDerivedURLs(t *testing.T) {
	c := Default()
	if got := c.BaseURL(); got != "http://localhost:8008" {
		t.Errorf("BaseURL = %s", got)
	}
	c.ServerName = "example.org"
	c.Listen.Federation = "0.0.0.0:8448"
	if got := c.BaseURL(); got != "https://example.org" {
		t.Errorf("BaseURL = %s", got)
	}
	if got := c.FederationServer(); got != "example.org" {
		t.Errorf("FederationServer = %s", got)
	}
	c.Listen.Federation = "0.0.0.0:9000"
	if got := c.FederationServer(); got != "example.org:9000" {
		t.Errorf("FederationServer = %s", got)
	}
}
