package config

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// AppService is one application service registration (Application Service API,
// "Registration"), loaded from a file in Synapse's format and validated. The
// operator guide is docs/appservices.md.
type AppService struct {
	// ID is unique among the registrations and never changes.
	ID string
	// URL is where transactions and queries go, without a trailing slash; ""
	// when the registration says url: null (no traffic is pushed).
	URL string
	// ASToken authenticates the service to this server; HSToken authenticates
	// this server to the service.
	ASToken string
	HSToken string
	// SenderLocalpart is the localpart of the service's own user.
	SenderLocalpart string
	// Users, Aliases and Rooms are the namespaces the service claims.
	Users   []Namespace
	Aliases []Namespace
	Rooms   []Namespace
	// RateLimited applies the client rate limits to the service's users (the
	// sender is never limited). Synapse's default is true.
	RateLimited bool
	// Protocols are the third-party protocols the service bridges.
	Protocols []string
	// ReceiveEphemeral asks for typing, receipts and presence in transactions
	// (also accepted as push_ephemeral and de.sorunome.msc2409.push_ephemeral).
	ReceiveEphemeral bool
	// IPRanges, when non-empty, are the only addresses the as_token is accepted
	// from (Synapse's ip_range_whitelist).
	IPRanges []netip.Prefix
	// File is the registration file the service was loaded from.
	File string
}

// Namespace is one entry of a registration's namespace list.
type Namespace struct {
	// Regex is the expression as written in the file.
	Regex string
	// Exclusive reserves matching IDs for this service.
	Exclusive bool
	// Pattern is Regex compiled and anchored at the start, as Synapse matches
	// it (Python's re.match): "@_irc_.*" matches "@_irc_bob:example.org" but not
	// "@bob_@_irc_:example.org".
	Pattern *regexp.Regexp
}

// Matches reports whether s is in the namespace.
func (n *Namespace) Matches(s string) bool { return n.Pattern.MatchString(s) }

// appServiceFile is the YAML layout of a registration file. Keys Synapse
// accepts for features Hearth does not implement are accepted and ignored, so
// files written for Synapse load unchanged; anything else is an error.
type appServiceFile struct {
	ID               string               `yaml:"id"`
	URL              *string              `yaml:"url"`
	ASToken          string               `yaml:"as_token"`
	HSToken          string               `yaml:"hs_token"`
	SenderLocalpart  string               `yaml:"sender_localpart"`
	Namespaces       *appServiceNamespace `yaml:"namespaces"`
	RateLimited      *bool                `yaml:"rate_limited"`
	Protocols        []string             `yaml:"protocols"`
	ReceiveEphemeral bool                 `yaml:"receive_ephemeral"`
	PushEphemeral    bool                 `yaml:"push_ephemeral"`
	MSC2409Ephemeral bool                 `yaml:"de.sorunome.msc2409.push_ephemeral"`
	IPRangeWhitelist []string             `yaml:"ip_range_whitelist"`
	// Accepted for compatibility, not implemented.
	MSC3202 bool `yaml:"org.matrix.msc3202"`
	MSC4190 bool `yaml:"io.element.msc4190"`
}

type appServiceNamespace struct {
	Users   []namespaceEntry `yaml:"users"`
	Aliases []namespaceEntry `yaml:"aliases"`
	Rooms   []namespaceEntry `yaml:"rooms"`
}

type namespaceEntry struct {
	Exclusive *bool   `yaml:"exclusive"`
	Regex     *string `yaml:"regex"`
}

// LoadAppServices reads the registration files named by app_service_config_files
// (relative paths resolve against the config file's directory) into
// c.AppServices. It checks each file on its own and the set as a whole: ids,
// as_tokens and hs_tokens must be unique, sender users distinct.
func (c *Config) LoadAppServices() error {
	out := make([]AppService, 0, len(c.AppServiceConfigFiles))
	for _, p := range c.AppServiceConfigFiles {
		as, err := ReadAppService(c.Resolve(p))
		if err != nil {
			return err
		}
		out = append(out, *as)
	}
	if err := checkAppServiceSet(out); err != nil {
		return err
	}
	c.AppServices = out
	return nil
}

// checkAppServiceSet enforces what must hold across registrations (Application
// Service API, "Registration": each as_token and id MUST be unique).
func checkAppServiceSet(list []AppService) error {
	var errs []error
	type seen struct{ what, file string }
	ids, tokens, senders := map[string]string{}, map[string]seen{}, map[string]string{}
	for _, as := range list {
		if f, dup := ids[as.ID]; dup {
			errs = append(errs, fmt.Errorf("application services in %s and %s share the id %q", f, as.File, as.ID))
		}
		ids[as.ID] = as.File
		for _, t := range []struct{ what, tok string }{{"as_token", as.ASToken}, {"hs_token", as.HSToken}} {
			if prev, dup := tokens[t.tok]; dup {
				errs = append(errs, fmt.Errorf("%s of %s is the same as the %s of %s; every token must be unique", t.what, as.File, prev.what, prev.file))
			}
			tokens[t.tok] = seen{t.what, as.File}
		}
		if f, dup := senders[as.SenderLocalpart]; dup {
			errs = append(errs, fmt.Errorf("application services in %s and %s share the sender_localpart %q", f, as.File, as.SenderLocalpart))
		}
		senders[as.SenderLocalpart] = as.File
	}
	return errors.Join(errs...)
}

// ReadAppService loads and validates one registration file.
func ReadAppService(path string) (*AppService, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading application service registration: %w", err)
	}
	as, err := ParseAppService(b)
	if err != nil {
		return nil, fmt.Errorf("application service registration %s: %w", path, err)
	}
	as.File = path
	return as, nil
}

// ParseAppService decodes a registration strictly and validates it.
func ParseAppService(b []byte) (*AppService, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	if len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("expected a mapping of keys (id, url, as_token, hs_token, sender_localpart, namespaces …)")
	}
	doc := root.Content[0]
	// url must be present, but may be null: "no traffic is required". A missing
	// url is far more likely a mistake than a wish for silence (as in Synapse).
	hasURL := false
	for i := 0; i+1 < len(doc.Content); i += 2 {
		if doc.Content[i].Value == "url" {
			hasURL = true
		}
	}
	var f appServiceFile
	if err := decodeStrict(doc, reflect.ValueOf(&f).Elem(), ""); err != nil {
		return nil, err
	}
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	as := &AppService{
		ID: f.ID, ASToken: f.ASToken, HSToken: f.HSToken, SenderLocalpart: f.SenderLocalpart,
		Protocols: f.Protocols, RateLimited: f.RateLimited == nil || *f.RateLimited,
		ReceiveEphemeral: f.ReceiveEphemeral || f.PushEphemeral || f.MSC2409Ephemeral,
	}
	if f.ID == "" {
		bad("id", "must not be empty")
	}
	if f.ASToken == "" {
		bad("as_token", "must not be empty")
	}
	if f.HSToken == "" {
		bad("hs_token", "must not be empty")
	}
	if f.ASToken != "" && f.ASToken == f.HSToken {
		bad("hs_token", "must differ from as_token")
	}
	if !validSenderLocalpart(f.SenderLocalpart) {
		bad("sender_localpart", "expected a user ID localpart (letters, digits and ._=-/~), got %q", f.SenderLocalpart)
	}
	switch {
	case !hasURL:
		bad("url", "missing (expected the service's URL, or null to push nothing)")
	case f.URL != nil:
		u, err := url.Parse(*f.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			bad("url", "expected an http:// or https:// URL (or null), got %q", *f.URL)
		} else {
			as.URL = strings.TrimRight(*f.URL, "/")
		}
	}
	if f.Namespaces == nil {
		bad("namespaces", "missing (expected users, aliases and rooms lists, each may be empty)")
	} else {
		as.Users = compileNamespaces("namespaces.users", f.Namespaces.Users, bad)
		as.Aliases = compileNamespaces("namespaces.aliases", f.Namespaces.Aliases, bad)
		as.Rooms = compileNamespaces("namespaces.rooms", f.Namespaces.Rooms, bad)
	}
	for i, p := range f.Protocols {
		if p == "" {
			bad(fmt.Sprintf("protocols[%d]", i), "must not be empty")
		}
	}
	for i, r := range f.IPRangeWhitelist {
		if pfx, err := netip.ParsePrefix(r); err == nil {
			as.IPRanges = append(as.IPRanges, pfx.Masked())
		} else if addr, err := netip.ParseAddr(r); err == nil {
			as.IPRanges = append(as.IPRanges, netip.PrefixFrom(addr, addr.BitLen()))
		} else {
			bad(fmt.Sprintf("ip_range_whitelist[%d]", i), "expected an address or CIDR such as 127.0.0.0/8, got %q", r)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return as, nil
}

func compileNamespaces(key string, entries []namespaceEntry, bad func(key, format string, args ...any)) []Namespace {
	out := make([]Namespace, 0, len(entries))
	for i, e := range entries {
		k := fmt.Sprintf("%s[%d]", key, i)
		if e.Regex == nil || *e.Regex == "" {
			bad(k+".regex", "missing (expected a regular expression)")
			continue
		}
		if e.Exclusive == nil {
			bad(k+".exclusive", "missing (expected true or false)")
			continue
		}
		re, err := regexp.Compile(`^(?:` + *e.Regex + `)`)
		if err != nil {
			bad(k+".regex", "not a valid regular expression (Go RE2 syntax): %v", err)
			continue
		}
		out = append(out, Namespace{Regex: *e.Regex, Exclusive: *e.Exclusive, Pattern: re})
	}
	return out
}

// validSenderLocalpart accepts what Synapse accepts: characters that need no
// URL encoding.
func validSenderLocalpart(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._=-/~", c) >= 0) {
			return false
		}
	}
	return true
}
