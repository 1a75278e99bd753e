package config

import (
	"fmt"
	"net/netip"
)

// Media configures the media repository (mediaapi; operator guide in docs/media.md).
type Media struct {
	// StoragePath is the directory media files are kept in, content-addressed.
	StoragePath string `yaml:"storage_path"`
	// MaxUploadBytes caps one upload; larger ones get 413 M_TOO_LARGE.
	MaxUploadBytes int64 `yaml:"max_upload_bytes"`
	// MaxImagePixels is the largest image (width × height) that is thumbnailed. It
	// is checked from the image header before anything is decoded.
	MaxImagePixels int64 `yaml:"max_image_pixels"`
	// LegacyUnauthenticated serves the deprecated unauthenticated
	// /_matrix/media/v3 (and r0) download and thumbnail endpoints.
	LegacyUnauthenticated bool `yaml:"legacy_unauthenticated"`
	// RemoteMaxBytes caps one file fetched from another server.
	RemoteMaxBytes int64 `yaml:"remote_max_bytes"`
	// RemoteTimeoutSeconds bounds one fetch of remote media or of a previewed URL.
	RemoteTimeoutSeconds int `yaml:"remote_timeout_seconds"`
	// URLPreview configures /_matrix/client/v1/media/preview_url.
	URLPreview URLPreview `yaml:"url_preview"`
}

// URLPreview configures URL previews, which make the server fetch arbitrary URLs.
type URLPreview struct {
	Enabled bool `yaml:"enabled"`
	// MaxBytes caps one previewed page or image.
	MaxBytes int64 `yaml:"max_bytes"`
	// AllowedCIDRs are networks previews may reach even when DeniedCIDRs lists them.
	AllowedCIDRs []string `yaml:"allowed_cidrs"`
	// DeniedCIDRs are networks previews must never connect to (SSRF protection).
	DeniedCIDRs []string `yaml:"denied_cidrs"`
}

func defaultMedia() Media {
	return Media{
		StoragePath:          "media",
		MaxUploadBytes:       50 << 20,
		MaxImagePixels:       32_000_000,
		RemoteMaxBytes:       50 << 20,
		RemoteTimeoutSeconds: 60,
		URLPreview: URLPreview{
			Enabled:     true,
			MaxBytes:    10 << 20,
			DeniedCIDRs: append([]string(nil), DefaultDeniedCIDRs...),
		},
	}
}

// validate reports every problem of the media section through bad.
func (m *Media) validate(bad func(key, format string, args ...any)) {
	if m.StoragePath == "" {
		bad("media.storage_path", "must not be empty (expected a directory for media files)")
	}
	if m.MaxUploadBytes < 1024 {
		bad("media.max_upload_bytes", "must be at least 1024, got %d", m.MaxUploadBytes)
	}
	if m.MaxImagePixels < 1 {
		bad("media.max_image_pixels", "must be at least 1, got %d", m.MaxImagePixels)
	}
	if m.RemoteMaxBytes < 1024 {
		bad("media.remote_max_bytes", "must be at least 1024, got %d", m.RemoteMaxBytes)
	}
	if m.RemoteTimeoutSeconds < 1 || m.RemoteTimeoutSeconds > 3600 {
		bad("media.remote_timeout_seconds", "must be 1–3600, got %d", m.RemoteTimeoutSeconds)
	}
	if m.URLPreview.MaxBytes < 1024 {
		bad("media.url_preview.max_bytes", "must be at least 1024, got %d", m.URLPreview.MaxBytes)
	}
	for i, c := range m.URLPreview.AllowedCIDRs {
		if _, err := netip.ParsePrefix(c); err != nil {
			bad(fmt.Sprintf("media.url_preview.allowed_cidrs[%d]", i), "expected a CIDR such as 127.0.0.0/8, got %q", c)
		}
	}
	for i, c := range m.URLPreview.DeniedCIDRs {
		if _, err := netip.ParsePrefix(c); err != nil {
			bad(fmt.Sprintf("media.url_preview.denied_cidrs[%d]", i), "expected a CIDR such as 10.0.0.0/8, got %q", c)
		}
	}
}

// MediaPath is the media storage directory, resolved against the config file's
// directory.
func (c *Config) MediaPath() string { return c.Resolve(c.Media.StoragePath) }
