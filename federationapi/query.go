package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"maunium.net/go/mautrix/id"

	"hearth/httputil"
)

// GET /_matrix/federation/v1/query/profile?user_id=&field=
func (a *API) getQueryProfile(w http.ResponseWriter, r *http.Request, origin string) error {
	q := r.URL.Query()
	userID := id.UserID(q.Get("user_id"))
	if userID == "" {
		return httputil.MissingParam("user_id is required")
	}
	if _, server, err := userID.Parse(); err != nil || server != a.serverName {
		return httputil.InvalidParam("User %s is not a user of this server", userID)
	}
	if a.opts.Profiles == nil {
		return httputil.NotFound("Profiles are not available")
	}
	prof, err := a.opts.Profiles.LocalProfile(r.Context(), userID)
	if errors.Is(err, ErrNotFound) {
		return httputil.NotFound("User does not exist")
	}
	if err != nil {
		return err
	}
	if field := q.Get("field"); field != "" {
		v, ok := prof[field]
		if !ok {
			return httputil.NotFound("The profile has no %s", field)
		}
		httputil.RespondJSON(w, http.StatusOK, map[string]json.RawMessage{field: v})
		return nil
	}
	httputil.RespondJSON(w, http.StatusOK, prof)
	return nil
}

// maxRemoteProfileFields bounds the fields kept from a remote profile answer.
const maxRemoteProfileFields = 100

// QueryRemoteProfile asks userID's server for the user's profile (GET
// /_matrix/federation/v1/query/profile), all of it or, with field set, that
// field only. Errors carrying a Matrix error code come back as
// *httputil.Error (M_NOT_FOUND for an unknown user or field).
func (a *API) QueryRemoteProfile(ctx context.Context, userID id.UserID, field string) (map[string]json.RawMessage, error) {
	_, server, err := userID.Parse()
	if err != nil || server == "" {
		return nil, httputil.InvalidParam("Invalid user ID %s", userID)
	}
	if server == a.serverName {
		return nil, fmt.Errorf("querying the profile of %s: a local user", userID)
	}
	q := url.Values{"user_id": {string(userID)}}
	if field != "" {
		q.Set("field", field)
	}
	var resp map[string]json.RawMessage
	if err := a.client.Query(ctx, server, "profile", q, &resp); err != nil {
		return nil, remoteError("querying the profile of "+string(userID), err)
	}
	out := make(map[string]json.RawMessage, min(len(resp), maxRemoteProfileFields))
	for k, v := range resp {
		if len(out) == maxRemoteProfileFields {
			break
		}
		if field == "" || k == field {
			out[k] = v
		}
	}
	return out, nil
}

// GET /_matrix/federation/v1/query/directory?room_alias=
func (a *API) getQueryDirectory(w http.ResponseWriter, r *http.Request, origin string) error {
	alias := id.RoomAlias(r.URL.Query().Get("room_alias"))
	if alias == "" {
		return httputil.MissingParam("room_alias is required")
	}
	if aliasServer(alias) != a.serverName {
		return httputil.NotFound("Alias %s is not on this server", alias)
	}
	dir := a.directory()
	if dir == nil {
		return httputil.NotFound("Room alias not found")
	}
	roomID, err := dir.ResolveLocalAlias(r.Context(), alias)
	if errors.Is(err, ErrNotFound) {
		return httputil.NotFound("Room alias not found")
	}
	if err != nil {
		return err
	}
	servers, err := a.serversInRoom(r.Context(), roomID)
	if err != nil {
		return err
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]any{"room_id": roomID, "servers": servers})
	return nil
}

// serversInRoom lists the servers with joined users in roomID, this server first.
func (a *API) serversInRoom(ctx context.Context, roomID id.RoomID) ([]string, error) {
	out := []string{a.serverName}
	members, err := a.rs.Members(ctx, roomID, "join")
	if err != nil {
		return out, nil //nolint:nilerr // an unknown room still names this server
	}
	seen := map[string]struct{}{a.serverName: {}}
	for _, m := range members {
		s := m.Homeserver()
		if _, ok := seen[s]; !ok && s != "" {
			seen[s] = struct{}{}
			out = append(out, s)
		}
	}
	slices.Sort(out[1:])
	return out, nil
}

// aliasServer returns the server part of a room alias ("" when malformed).
func aliasServer(alias id.RoomAlias) string {
	s := string(alias)
	if !strings.HasPrefix(s, "#") {
		return ""
	}
	_, server, ok := strings.Cut(s, ":")
	if !ok {
		return ""
	}
	return server
}
