package config

import (
	"bytes"
	"strconv"
	"text/template"
)

// GenerateOptions are the values `hearth generate-config` writes into a new file.
type GenerateOptions struct {
	ServerName         string
	Database           string
	ClientAddr         string
	FederationAddr     string
	OpenRegistration   bool
	SharedSecret       string
	SigningKeyFileName string
}

var fileTemplate = template.Must(template.New("hearth.yaml").Parse(`# Hearth homeserver configuration.
# Every key is shown with its default value. Relative paths are relative to the
# directory of this file. See docs/config.md for the full reference.

# The domain in your users' IDs (@alice:server_name). It can never change once
# users exist.
server_name: {{printf "%q" .ServerName}}

# The ed25519 key that signs events and federation requests. Keep it secret and
# keep it: other servers remember it.
signing_key_path: {{printf "%q" .SigningKeyFileName}}

# A SQLite file path (the default, zero set-up) or a postgres:// URL.
database: {{printf "%q" .Database}}

# The URL clients use to reach this server (answered in /.well-known/matrix/client).
# Empty: https://<server_name>, or http:// for localhost.
public_base_url: ""

listen:
  # Client-server API (also media, admin and /.well-known).
  client: {{printf "%q" .ClientAddr}}
  # Server-server (federation) API. Empty serves federation on the client listener.
  federation: {{printf "%q" .FederationAddr}}

metrics:
  # Prometheus metrics at /metrics.
  enabled: true
  # A separate host:port for /metrics. Empty serves it on the client listener.
  listen: ""

registration:
  # Anyone may register (m.login.dummy). Leave off on a public server.
  open: {{.OpenRegistration}}
  # Secret for /_synapse/admin/v1/register (admin tools, test suites). Empty disables it.
  shared_secret: {{.SharedSecretQuoted}}
  # Allow kind=guest registration.
  allow_guests: false

limits:
  # Largest JSON request body accepted, in bytes.
  max_request_body_bytes: 1048576

rate_limits:
  # Per-client limits on login and registration requests.
  enabled: true
  per_second: 0.5
  burst: 5

rooms:
  # Room version for new rooms (1–12). 10 is the default; 11 and 12 are offered.
  default_version: "10"

well_known:
  # host:port answered in /.well-known/matrix/server. Empty: server_name itself
  # (with the federation listener's port when server_name has none).
  server: ""

log:
  # debug, info, warn or error.
  level: info
  # text or json.
  format: text
`))

// Generate renders a complete, commented hearth.yaml.
func Generate(o GenerateOptions) ([]byte, error) {
	data := struct {
		GenerateOptions
		SharedSecretQuoted string
	}{o, strconv.Quote(o.SharedSecret)}
	if data.SigningKeyFileName == "" {
		data.SigningKeyFileName = "signing.key"
	}
	var buf bytes.Buffer
	if err := fileTemplate.Execute(&buf, data); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	// What we write must load.
	if _, err := Parse(b); err != nil {
		return nil, err
	}
	return b, nil
}
