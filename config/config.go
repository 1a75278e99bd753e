// Package config defines Hearth's YAML configuration: its types, defaults, strict
// loading (unknown keys are errors) and validation with messages that name the key.
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Config is the whole of hearth.yaml.
type Config struct {
	// ServerName is the domain in user IDs (@alice:server_name). It can never change.
	ServerName string `yaml:"server_name"`
	// SigningKeyPath is the ed25519 key that signs events and federation requests.
	SigningKeyPath string `yaml:"signing_key_path"`
	// Database is a SQLite file path or a postgres:// URL.
	Database string `yaml:"database"`
	// PublicBaseURL is the URL clients reach the client API at.
	PublicBaseURL string       `yaml:"public_base_url"`
	Listen        Listen       `yaml:"listen"`
	Metrics       Metrics      `yaml:"metrics"`
	Registration  Registration `yaml:"registration"`
	Limits        Limits       `yaml:"limits"`
	RateLimits    RateLimits   `yaml:"rate_limits"`
	Rooms         Rooms        `yaml:"rooms"`
	WellKnown     WellKnown    `yaml:"well_known"`
	Federation    Federation   `yaml:"federation"`
	Media         Media        `yaml:"media"`
	Log           Log          `yaml:"log"`
	// ServerNotices configures the server notices user and rooms.
	ServerNotices ServerNotices `yaml:"server_notices"`
	// DelayedEvents configures delayed events (MSC4140).
	DelayedEvents DelayedEvents `yaml:"delayed_events"`
	// AppServiceConfigFiles are application service registration files, in
	// Synapse's format (docs/appservices.md).
	AppServiceConfigFiles []string `yaml:"app_service_config_files"`
	// AppServices are the registrations read from AppServiceConfigFiles by Load
	// (or LoadAppServices).
	AppServices []AppService `yaml:"-"`

	// path is where the config was loaded from; relative paths resolve against its directory.
	path string
}

// Listen holds listener addresses.
type Listen struct {
	// Client is the client-server API listener (also media, admin, well-known).
	Client string `yaml:"client"`
	// Federation is the server-server API listener; empty serves federation on the
	// client listener.
	Federation string `yaml:"federation"`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	Enabled bool `yaml:"enabled"`
	// Listen is a separate address for /metrics; empty serves it on the client listener.
	Listen string `yaml:"listen"`
}

// Registration configures who may create accounts.
type Registration struct {
	Open         bool   `yaml:"open"`
	SharedSecret string `yaml:"shared_secret"`
	AllowGuests  bool   `yaml:"allow_guests"`
}

// Limits bounds request sizes.
type Limits struct {
	// MaxRequestBodyBytes caps JSON request bodies (media uploads have their own limit).
	MaxRequestBodyBytes int64 `yaml:"max_request_body_bytes"`
}

// RateLimits configures per-client limits on login and registration.
type RateLimits struct {
	Enabled bool `yaml:"enabled"`
	// PerSecond is the sustained rate of requests allowed per client address.
	PerSecond float64 `yaml:"per_second"`
	// Burst is how many requests may arrive at once.
	Burst int `yaml:"burst"`
}

// Rooms configures room creation.
type Rooms struct {
	DefaultVersion string `yaml:"default_version"`
}

// WellKnown configures /.well-known/matrix answers.
type WellKnown struct {
	// Server is the delegated federation host:port; empty means server_name itself
	// (with the federation listener's port when server_name has none).
	Server string `yaml:"server"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Default returns the configuration used for any key a file leaves out.
func Default() *Config {
	return &Config{
		ServerName:     "localhost:8008",
		SigningKeyPath: "signing.key",
		Database:       "hearth.db",
		Listen:         Listen{Client: "127.0.0.1:8008", Federation: "0.0.0.0:8448"},
		Metrics:        Metrics{Enabled: true},
		Limits:         Limits{MaxRequestBodyBytes: 1 << 20},
		RateLimits:     RateLimits{Enabled: true, PerSecond: 0.5, Burst: 5},
		Rooms:          Rooms{DefaultVersion: "10"},
		Federation:     defaultFederation(),
		Media:          defaultMedia(),
		Log:            Log{Level: "info", Format: "text"},
		ServerNotices:  defaultServerNotices(),
		DelayedEvents:  defaultDelayedEvents(),
	}
}

// Load reads, decodes strictly and validates the file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	cfg, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	cfg.path = abs
	if err := cfg.LoadAppServices(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes YAML over the defaults and validates the result.
func Parse(b []byte) (*Config, error) {
	cfg := Default()
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	if len(root.Content) > 0 {
		if err := decodeStrict(root.Content[0], reflect.ValueOf(cfg).Elem(), ""); err != nil {
			return nil, err
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// decodeStrict decodes node into v, rejecting unknown keys and naming the full key
// path of any error.
func decodeStrict(node *yaml.Node, v reflect.Value, path string) error {
	if v.Kind() == reflect.Pointer {
		// Optional values: null leaves them nil, anything else is decoded into a
		// fresh value, so presence can be told from the zero value.
		if node.Kind == yaml.ScalarNode && node.Tag == "!!null" {
			v.Set(reflect.Zero(v.Type()))
			return nil
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return decodeStrict(node, v.Elem(), path)
	}
	if v.Kind() == reflect.Struct {
		if node.Kind != yaml.MappingNode {
			if node.Tag == "!!null" {
				return nil
			}
			return fmt.Errorf("%s (line %d): expected a mapping of keys", nameOr(path, "the top level"), node.Line)
		}
		t := v.Type()
		fields := map[string]int{}
		var known []string
		for i := 0; i < t.NumField(); i++ {
			tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			fields[tag] = i
			known = append(known, tag)
		}
		for i := 0; i+1 < len(node.Content); i += 2 {
			k, val := node.Content[i], node.Content[i+1]
			key := join(path, k.Value)
			idx, ok := fields[k.Value]
			if !ok {
				return fmt.Errorf("%s (line %d): unknown key; expected one of: %s", key, k.Line, strings.Join(known, ", "))
			}
			if err := decodeStrict(val, v.Field(idx), key); err != nil {
				return err
			}
		}
		return nil
	}
	if node.Kind == yaml.ScalarNode && node.Tag == "!!null" {
		// "key:" with no value means the empty value, not the default.
		v.Set(reflect.Zero(v.Type()))
		return nil
	}
	switch v.Kind() {
	case reflect.Slice:
		if node.Kind != yaml.SequenceNode {
			return fmt.Errorf("%s (line %d): expected a list", path, node.Line)
		}
		s := reflect.MakeSlice(v.Type(), len(node.Content), len(node.Content))
		for i, item := range node.Content {
			if err := decodeStrict(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	case reflect.Map:
		if node.Kind != yaml.MappingNode {
			return fmt.Errorf("%s (line %d): expected a mapping", path, node.Line)
		}
		m := reflect.MakeMapWithSize(v.Type(), len(node.Content)/2)
		for i := 0; i+1 < len(node.Content); i += 2 {
			k, val := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
			if err := decodeStrict(node.Content[i], k, path); err != nil {
				return err
			}
			if err := decodeStrict(node.Content[i+1], val, join(path, node.Content[i].Value)); err != nil {
				return err
			}
			m.SetMapIndex(k, val)
		}
		v.Set(m)
		return nil
	}
	if node.Kind != yaml.ScalarNode {
		return fmt.Errorf("%s (line %d): expected %s", path, node.Line, describe(v.Kind()))
	}
	if err := node.Decode(v.Addr().Interface()); err != nil {
		return fmt.Errorf("%s (line %d): expected %s, got %q", path, node.Line, describe(v.Kind()), node.Value)
	}
	return nil
}

func describe(k reflect.Kind) string {
	switch k {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "an integer"
	case reflect.Float64, reflect.Float32:
		return "a number"
	default:
		return "a string"
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func nameOr(path, alt string) string {
	if path == "" {
		return alt
	}
	return path
}

// Validate checks every key and returns all problems found, one per line.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if err := ValidateServerName(c.ServerName); err != nil {
		bad("server_name", "%v (expected a host name or IP literal with an optional port, e.g. example.org or localhost:8008)", err)
	}
	if c.SigningKeyPath == "" {
		bad("signing_key_path", "must not be empty (expected the path of the ed25519 signing key)")
	}
	if c.Database == "" {
		bad("database", "must not be empty (expected a SQLite file path or a postgres:// URL)")
	}
	if c.PublicBaseURL != "" && !strings.HasPrefix(c.PublicBaseURL, "http://") && !strings.HasPrefix(c.PublicBaseURL, "https://") {
		bad("public_base_url", "expected an http:// or https:// URL, got %q", c.PublicBaseURL)
	}
	checkAddr := func(key, addr string, optional bool) {
		if addr == "" {
			if !optional {
				bad(key, "must not be empty (expected host:port, e.g. 127.0.0.1:8008)")
			}
			return
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			bad(key, "expected host:port, got %q", addr)
			return
		}
		if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			bad(key, "port must be 0–65535, got %q", port)
		}
		if host != "" && net.ParseIP(host) == nil && !validHostname(host) {
			bad(key, "expected an IP address or host name, got %q", host)
		}
	}
	checkAddr("listen.client", c.Listen.Client, false)
	checkAddr("listen.federation", c.Listen.Federation, true)
	checkAddr("metrics.listen", c.Metrics.Listen, true)
	if c.Limits.MaxRequestBodyBytes < 1024 {
		bad("limits.max_request_body_bytes", "must be at least 1024, got %d", c.Limits.MaxRequestBodyBytes)
	}
	if c.RateLimits.Enabled && (c.RateLimits.PerSecond <= 0 || c.RateLimits.Burst < 1) {
		bad("rate_limits", "per_second must be > 0 and burst ≥ 1 when enabled")
	}
	if !knownRoomVersion(c.Rooms.DefaultVersion) {
		bad("rooms.default_version", "expected a room version from 1 to 12, got %q", c.Rooms.DefaultVersion)
	}
	if c.WellKnown.Server != "" {
		if err := ValidateServerName(c.WellKnown.Server); err != nil {
			bad("well_known.server", "%v", err)
		}
	}
	c.Federation.validate(bad)
	c.Media.validate(bad)
	c.ServerNotices.validate(bad)
	c.DelayedEvents.validate(bad)
	for i, f := range c.AppServiceConfigFiles {
		if f == "" {
			bad(fmt.Sprintf("app_service_config_files[%d]", i), "must not be empty (expected the path of a registration file)")
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "expected one of debug, info, warn, error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "expected text or json, got %q", c.Log.Format)
	}
	return errors.Join(errs...)
}

func knownRoomVersion(v string) bool {
	n, err := strconv.Atoi(v)
	return err == nil && n >= 1 && n <= 12 && strconv.Itoa(n) == v
}

// ValidateServerName checks the spec's server name grammar (Appendices, "Server
// Name"): a DNS name, IPv4 literal or bracketed IPv6 literal, with an optional port.
func ValidateServerName(name string) error {
	if name == "" {
		return errors.New("must not be empty")
	}
	if len(name) > 255 {
		return errors.New("longer than 255 characters")
	}
	host, port := name, ""
	if strings.HasPrefix(name, "[") {
		end := strings.IndexByte(name, ']')
		if end < 0 {
			return fmt.Errorf("%q: unterminated IPv6 literal", name)
		}
		host, port = name[1:end], name[end+1:]
		if ip := net.ParseIP(host); ip == nil || ip.To4() != nil {
			return fmt.Errorf("%q: bad IPv6 literal", name)
		}
		if port != "" {
			if !strings.HasPrefix(port, ":") {
				return fmt.Errorf("%q: unexpected text after IPv6 literal", name)
			}
			port = port[1:]
		} else {
			return nil
		}
	} else if i := strings.LastIndexByte(name, ':'); i >= 0 {
		host, port = name[:i], name[i+1:]
		if !validHostname(host) {
			return fmt.Errorf("%q: bad host name", name)
		}
	} else if !validHostname(host) {
		return fmt.Errorf("%q: bad host name", name)
	}
	if port != "" || strings.HasSuffix(name, ":") {
		if len(port) == 0 || len(port) > 5 {
			return fmt.Errorf("%q: bad port", name)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 {
			return fmt.Errorf("%q: bad port", name)
		}
	}
	return nil
}

// validHostname: 1–255 of [A-Za-z0-9.-] (which also covers IPv4 literals).
func validHostname(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// Path is the file the config was loaded from ("" when parsed from bytes).
func (c *Config) Path() string { return c.path }

// Resolve makes p absolute against the config file's directory.
func (c *Config) Resolve(p string) string {
	if p == "" || filepath.IsAbs(p) || c.path == "" {
		return p
	}
	return filepath.Join(filepath.Dir(c.path), p)
}

// DatabaseDSN is the database DSN with a relative SQLite path resolved.
func (c *Config) DatabaseDSN() string {
	if strings.HasPrefix(c.Database, "postgres://") || strings.HasPrefix(c.Database, "postgresql://") {
		return c.Database
	}
	return c.Resolve(c.Database)
}

// BaseURL is the URL clients use: public_base_url, or one derived from server_name.
func (c *Config) BaseURL() string {
	if c.PublicBaseURL != "" {
		return strings.TrimRight(c.PublicBaseURL, "/")
	}
	host := c.ServerName
	if strings.HasPrefix(host, "localhost") || strings.HasPrefix(host, "127.") || strings.HasPrefix(host, "[::1]") {
		return "http://" + host
	}
	return "https://" + host
}

// FederationServer is the host:port other servers should reach us at, for
// /.well-known/matrix/server.
func (c *Config) FederationServer() string {
	if c.WellKnown.Server != "" {
		return c.WellKnown.Server
	}
	if hasPort(c.ServerName) || c.Listen.Federation == "" {
		return c.ServerName
	}
	_, port, err := net.SplitHostPort(c.Listen.Federation)
	if err != nil || port == "8448" {
		return c.ServerName
	}
	return c.ServerName + ":" + port
}

func hasPort(name string) bool {
	if strings.HasPrefix(name, "[") {
		return strings.Contains(name, "]:")
	}
	return strings.Contains(name, ":")
}
