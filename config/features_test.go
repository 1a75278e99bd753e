package config

import (
	"strings"
	"testing"
)

func TestFeaturesValidation(t *testing.T) {
	tests := []struct {
		name, yaml, wantErr string
	}{
		{"defaults", ``, ""},
		{"notices off", "server_notices:\n  enabled: false\n  system_user_localpart: \"\"", ""},
		{"empty localpart", "server_notices:\n  system_user_localpart: \"\"", "server_notices.system_user_localpart: must not be empty"},
		{"bad localpart", "server_notices:\n  system_user_localpart: \"Notices\"", "server_notices.system_user_localpart: may only contain"},
		{"bad avatar", "server_notices:\n  system_user_avatar_url: \"https://x\"", "server_notices.system_user_avatar_url: expected an mxc:// URI"},
		{"unknown key", "server_notices:\n  localpart: x", "server_notices.localpart (line 2): unknown key"},
		{"negative delay", "delayed_events:\n  max_delay_ms: -1", "delayed_events.max_delay_ms: must be 0 (off) or more"},
		{"no room for events", "delayed_events:\n  max_per_user: 0", "delayed_events.max_per_user: must be at least 1"},
		{"delayed events off", "delayed_events:\n  max_delay_ms: 0\n  max_per_user: 0", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestIsReservedLocalpart(t *testing.T) {
	c := Default()
	for lp, want := range map[string]bool{"_server": true, "_SERVER": true, "alice": false, "_server2": false} {
		if got := c.IsReservedLocalpart(lp); got != want {
			t.Errorf("IsReservedLocalpart(%q) = %v", lp, got)
		}
	}
	c.ServerNotices.Enabled = false
	if c.IsReservedLocalpart("_server") {
		t.Error("reserved while server notices are off")
	}
}
