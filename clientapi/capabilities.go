package clientapi

import (
	"net/http"

	"github.com/gorilla/mux"

	"hearth/httputil"
	"hearth/roomserver/roomversion"
)

// registerCapabilityRoutes serves GET /capabilities (Client-Server API,
// "Capabilities negotiation").
func (a *API) registerCapabilityRoutes(r *mux.Router) {
	handle(r, v3R0, "/capabilities", a.authed(a.capabilities, allowGuests), http.MethodGet)
}

// supportedRoomVersions are the room versions Hearth serves, from the room
// version table.
var supportedRoomVersions = roomversion.Available()

type enabled struct {
	Enabled bool `json:"enabled"`
}

// GET /capabilities
func (a *API) capabilities(w http.ResponseWriter, r *http.Request, d *Device) error {
	full := !d.IsGuest
	profile := map[string]any{"enabled": true}
	if d.IsGuest {
		// Guests may change only their display name ("Guest Access").
		profile["allowed"] = []string{"displayname"}
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]any{"capabilities": map[string]any{
		"m.change_password": enabled{full},
		"m.room_versions": map[string]any{
			"default":   a.cfg.Rooms.DefaultVersion,
			"available": supportedRoomVersions,
		},
		"m.set_displayname": enabled{true},
		"m.set_avatar_url":  enabled{full},
		"m.3pid_changes":    enabled{false},
		"m.get_login_token": enabled{full},
		"m.profile_fields":  profile,
	}})
	return nil
}
