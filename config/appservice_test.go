package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const validRegistration = `id: "IRC Bridge"
url: "http://127.0.0.1:1234/"
as_token: "as-secret"
hs_token: "hs-secret"
sender_localpart: "_irc_bot"
namespaces:
  users:
    - exclusive: true
      regex: "@_irc_bridge_.*"
  aliases:
    - exclusive: false
      regex: "#_irc_bridge_.*"
  rooms: []
`

func TestParseAppService(t *testing.T) {
	as, err := ParseAppService([]byte(validRegistration))
	if err != nil {
		t.Fatal(err)
	}
	if as.ID != "IRC Bridge" || as.URL != "http://127.0.0.1:1234" || as.ASToken != "as-secret" || as.HSToken != "hs-secret" ||
		as.SenderLocalpart != "_irc_bot" || !as.RateLimited || len(as.Users) != 1 || !as.Users[0].Exclusive || len(as.Aliases) != 1 {
		t.Fatalf("parsed %+v", as)
	}
	// Namespaces match from the start, as Python's re.match (Synapse) does.
	for s, want := range map[string]bool{
		"@_irc_bridge_bob:example.org": true,
		"@_irc_bridge_":                true,
		"@x@_irc_bridge_:example.org":  false,
		"@_irc_bot:example.org":        false,
	} {
		if got := as.Users[0].Matches(s); got != want {
			t.Errorf("users namespace matches %q = %v, want %v", s, got, want)
		}
	}
}

func TestParseAppServiceOptions(t *testing.T) {
	tests := []struct {
		name  string
		extra string
		check func(*AppService) bool
	}{
		{"null url pushes nothing", "url: null\n", func(a *AppService) bool { return a.URL == "" }},
		{"rate_limited false", "rate_limited: false\n", func(a *AppService) bool { return !a.RateLimited }},
		{"receive_ephemeral", "receive_ephemeral: true\n", func(a *AppService) bool { return a.ReceiveEphemeral }},
		{"MSC2409 push_ephemeral", "de.sorunome.msc2409.push_ephemeral: true\n", func(a *AppService) bool { return a.ReceiveEphemeral }},
		{"protocols", "protocols: [irc, gitter]\n", func(a *AppService) bool { return len(a.Protocols) == 2 }},
		{"ip ranges", "ip_range_whitelist: [127.0.0.0/8, '::1']\n", func(a *AppService) bool {
			return len(a.IPRanges) == 2 && a.IPRanges[1].Bits() == 128
		}},
		{"unstable flags accepted", "org.matrix.msc3202: true\nio.element.msc4190: false\n", func(a *AppService) bool { return true }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			y := strings.Replace(validRegistration, "url: \"http://127.0.0.1:1234/\"\n", "", 1)
			if !strings.HasPrefix(tc.extra, "url:") {
				y += "url: \"http://127.0.0.1:1234\"\n"
			}
			as, err := ParseAppService([]byte(y + tc.extra))
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(as) {
				t.Fatalf("parsed %+v", as)
			}
		})
	}
}

func TestParseAppServiceErrors(t *testing.T) {
	replace := func(old, new string) string { return strings.Replace(validRegistration, old, new, 1) }
	tests := []struct {
		name, yaml, want string
	}{
		{"not a mapping", "- a\n", "expected a mapping"},
		{"unknown key", validRegistration + "colour: blue\n", "colour (line 14): unknown key"},
		{"missing url", replace("url: \"http://127.0.0.1:1234/\"\n", ""), "url: missing"},
		{"bad url", replace("http://127.0.0.1:1234/", "ftp://x"), "url: expected an http:// or https:// URL"},
		{"missing id", replace(`id: "IRC Bridge"`, ""), "id: must not be empty"},
		{"missing as_token", replace(`as_token: "as-secret"`, ""), "as_token: must not be empty"},
		{"same tokens", replace(`hs_token: "hs-secret"`, `hs_token: "as-secret"`), "hs_token: must differ from as_token"},
		{"bad sender", replace(`"_irc_bot"`, `"bot:x"`), "sender_localpart: expected a user ID localpart"},
		{"no namespaces", strings.Split(validRegistration, "namespaces:")[0], "namespaces: missing"},
		{"bad regex", replace(`"@_irc_bridge_.*"`, `"@(unclosed"`), "namespaces.users[0].regex: not a valid regular expression"},
		{"missing exclusive", replace("    - exclusive: true\n      regex", "    - regex"), "namespaces.users[0].exclusive: missing"},
		{"exclusive not bool", replace("exclusive: true", "exclusive: sometimes"), "exclusive (line 8): expected true or false"},
		{"bad ip range", validRegistration + "ip_range_whitelist: [nowhere]\n", "ip_range_whitelist[0]: expected an address or CIDR"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseAppService([]byte(tc.yaml))
			if err == nil {
				t.Fatalf("no error for:\n%s", tc.yaml)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestLoadAppServicesChecksTheSet(t *testing.T) {
	write := func(dir, name, id, asTok, hsTok, sender string) string {
		t.Helper()
		y := strings.NewReplacer(`"IRC Bridge"`, id, `"as-secret"`, asTok, `"hs-secret"`, hsTok, `"_irc_bot"`, sender).Replace(validRegistration)
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
		return name
	}
	tests := []struct {
		name    string
		second  [4]string // id, as_token, hs_token, sender
		wantErr string
	}{
		{"distinct", [4]string{"b", "as2", "hs2", "bot2"}, ""},
		{"same id", [4]string{"a", "as2", "hs2", "bot2"}, `share the id "a"`},
		{"same as_token", [4]string{"b", "as1", "hs2", "bot2"}, "as_token of"},
		{"as_token reused as hs_token", [4]string{"b", "as2", "as1", "bot2"}, "hs_token of"},
		{"same sender", [4]string{"b", "as2", "hs2", "bot1"}, "share the sender_localpart"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfgPath := filepath.Join(dir, "hearth.yaml")
			f1 := write(dir, "a.yaml", "a", "as1", "hs1", "bot1")
			f2 := write(dir, "b.yaml", tc.second[0], tc.second[1], tc.second[2], tc.second[3])
			y := "app_service_config_files: [" + f1 + ", " + f2 + "]\n"
			if err := os.WriteFile(cfgPath, []byte(y), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := Load(cfgPath)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if len(cfg.AppServices) != 2 || cfg.AppServices[1].File != filepath.Join(dir, "b.yaml") {
					t.Fatalf("loaded %+v", cfg.AppServices)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestLoadAppServicesMissingFile(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "hearth.yaml")
	if err := os.WriteFile(cfgPath, []byte("app_service_config_files: [nope.yaml]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(cfgPath); err == nil || !strings.Contains(err.Error(), "nope.yaml") {
		t.Fatalf("error %v, want one naming the missing file", err)
	}
	if _, err := Parse([]byte("app_service_config_files: ['']\n")); err == nil || !strings.Contains(err.Error(), "app_service_config_files[0]") {
		t.Fatalf("empty path: error %v", err)
	}
}
