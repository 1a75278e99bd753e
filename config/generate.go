package config

import (
	"bytes"
	"strconv"
	"strings"
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

federation:
  # Serve the server-server API and talk to other servers.
  enabled: true
  # PEM certificate and key for the federation listener. Both empty: a
  # self-signed certificate is generated next to the signing key at first start
  # (for testing, or behind a reverse proxy that terminates TLS). Other servers
  # only federate with a certificate they trust (e.g. from Let's Encrypt).
  tls_cert: ""
  tls_key: ""
  # Extra PEM CA bundle trusted for outbound requests, besides the system's.
  ca_file: ""
  # Do not verify other servers' certificates. Testing only!
  skip_verify: false
  # Networks outbound requests may reach although denied_cidrs lists them,
  # e.g. ["127.0.0.0/8"] for a test federation on one machine.
  allowed_cidrs: []
  # Networks outbound requests must never reach (protection against SSRF):
  # loopback, private, link-local and other special ranges.
  denied_cidrs: [{{.DeniedCIDRs}}]
  # Servers asked for other servers' signing keys when those cannot be reached
  # directly, e.g.:
  #   - server_name: matrix.org
  #     verify_keys:
  #       "ed25519:auto": "Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw"
  key_notaries: []

media:
  # Directory for uploaded files, thumbnails and cached remote media, stored
  # content-addressed (one file per distinct content). See docs/media.md.
  storage_path: "media"
  # Largest upload accepted, in bytes; larger ones get 413 M_TOO_LARGE.
  max_upload_bytes: 52428800
  # Largest image, in pixels (width x height), that is thumbnailed; checked from
  # the image header before decoding.
  max_image_pixels: 32000000
  # Serve the deprecated unauthenticated /_matrix/media/v3/download and
  # /thumbnail endpoints, for clients older than Matrix 1.11. Off: anyone holding
  # an mxc:// URL needs an account here to fetch it.
  legacy_unauthenticated: false
  # Largest file fetched from another server, in bytes.
  remote_max_bytes: 52428800
  # Time limit of one fetch from another server or of a URL preview, in seconds.
  remote_timeout_seconds: 60
  url_preview:
    # Let clients ask for previews (title, description, image) of URLs.
    enabled: true
    # Largest previewed page or image, in bytes.
    max_bytes: 10485760
    # Networks previews may reach although denied_cidrs lists them.
    allowed_cidrs: []
    # Networks previews must never connect to (protection against SSRF).
    denied_cidrs: [{{.DeniedCIDRs}}]

server_notices:
  # Let server admins send notices to users (POST
  # /_synapse/admin/v1/send_server_notice), delivered by a system user in a
  # private room per user. See docs/clientapi.md.
  enabled: true
  # Localpart of the system user; reserved, nobody can register it.
  system_user_localpart: "_server"
  # The system user's display name and avatar (an mxc:// URI) in notice rooms.
  system_user_display_name: "Server Notices"
  system_user_avatar_url: ""
  # Name of the notice rooms.
  room_name: "Server Notices"

delayed_events:
  # Longest delay clients may schedule events with (MSC4140), in milliseconds.
  # 0 turns delayed events off.
  max_delay_ms: 86400000
  # Most delayed events one user may have scheduled at once.
  max_per_user: 100

# Application service registration files (bridges, bots), in Synapse's format.
# See docs/appservices.md.
app_service_config_files: []

log:
  # debug, info, warn or error.
  level: info
  # text or json.
  format: text
`))

// Generate renders a complete, commented hearth.yaml.
func Generate(o GenerateOptions) ([]byte, error) {
	denied := make([]string, len(DefaultDeniedCIDRs))
	for i, c := range DefaultDeniedCIDRs {
		denied[i] = strconv.Quote(c)
	}
	data := struct {
		GenerateOptions
		SharedSecretQuoted string
		DeniedCIDRs        string
	}{o, strconv.Quote(o.SharedSecret), strings.Join(denied, ", ")}
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
