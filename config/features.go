package config

import "strings"

// ServerNotices configures server notices: messages an admin sends to a user
// through Synapse's admin API (POST /_synapse/admin/v1/send_server_notice),
// delivered by a system user in a private room per user (docs/clientapi.md).
type ServerNotices struct {
	Enabled bool `yaml:"enabled"`
	// SystemUserLocalpart is the localpart of the user that sends notices. It
	// is reserved: nobody can register it.
	SystemUserLocalpart string `yaml:"system_user_localpart"`
	// SystemUserDisplayName and SystemUserAvatarURL are the system user's
	// profile in notice rooms (empty: none).
	SystemUserDisplayName string `yaml:"system_user_display_name"`
	SystemUserAvatarURL   string `yaml:"system_user_avatar_url"`
	// RoomName is the name of the notice rooms.
	RoomName string `yaml:"room_name"`
}

func defaultServerNotices() ServerNotices {
	return ServerNotices{Enabled: true, SystemUserLocalpart: "_server", SystemUserDisplayName: "Server Notices", RoomName: "Server Notices"}
}

// validate reports every problem of the server_notices section through bad.
func (s *ServerNotices) validate(bad func(key, format string, args ...any)) {
	if !s.Enabled {
		return
	}
	lp := s.SystemUserLocalpart
	if lp == "" {
		bad("server_notices.system_user_localpart", "must not be empty while server notices are enabled")
	}
	for i := 0; i < len(lp); i++ {
		if c := lp[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("._=-/+", c) >= 0) {
			bad("server_notices.system_user_localpart", "may only contain a-z, 0-9 and ._=-/+, got %q", lp)
			break
		}
	}
	if s.SystemUserAvatarURL != "" && !strings.HasPrefix(s.SystemUserAvatarURL, "mxc://") {
		bad("server_notices.system_user_avatar_url", "expected an mxc:// URI, got %q", s.SystemUserAvatarURL)
	}
	if len(s.RoomName) > 255 {
		bad("server_notices.room_name", "must be at most 255 bytes")
	}
}

// DelayedEvents configures delayed events (MSC4140): events clients schedule
// to be sent later.
type DelayedEvents struct {
	// MaxDelayMS is the longest delay a client may ask for, in milliseconds;
	// 0 turns delayed events off.
	MaxDelayMS int64 `yaml:"max_delay_ms"`
	// MaxPerUser caps the delayed events one user may have scheduled at once.
	MaxPerUser int `yaml:"max_per_user"`
}

func defaultDelayedEvents() DelayedEvents {
	return DelayedEvents{MaxDelayMS: 24 * 60 * 60 * 1000, MaxPerUser: 100}
}

// validate reports every problem of the delayed_events section through bad.
func (d *DelayedEvents) validate(bad func(key, format string, args ...any)) {
	if d.MaxDelayMS < 0 {
		bad("delayed_events.max_delay_ms", "must be 0 (off) or more, got %d", d.MaxDelayMS)
	}
	if d.MaxDelayMS > 0 && d.MaxPerUser < 1 {
		bad("delayed_events.max_per_user", "must be at least 1, got %d", d.MaxPerUser)
	}
}

// IsReservedLocalpart reports whether a localpart is taken by the server
// itself (the server notices user) and so cannot be registered.
func (c *Config) IsReservedLocalpart(localpart string) bool {
	return c.ServerNotices.Enabled && strings.EqualFold(c.ServerNotices.SystemUserLocalpart, localpart)
}
