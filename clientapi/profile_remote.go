package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"github.com/gorilla/mux"
	"maunium.net/go/mautrix/id"

	"hearth/httputil"
)

// RemoteProfiles looks up the profiles of users of other servers (Server-Server
// API, "Querying for information": GET /query/profile). It is implemented by
// federation.
type RemoteProfiles interface {
	// QueryRemoteProfile returns userID's profile, or only field when it is
	// not empty. Refusals carrying a Matrix error come back as *httputil.Error.
	QueryRemoteProfile(ctx context.Context, userID id.UserID, field string) (map[string]json.RawMessage, error)
}

// remoteProfile answers GET /profile/{userId}[/{keyName}] for a user of another
// server by asking that server (Client-Server API, "Profiles": the homeserver
// queries the user's server when it does not hold the profile). remote is
// false for local users, whom the caller serves from the account store.
func (a *API) remoteProfile(r *http.Request, field string) (profile map[string]json.RawMessage, remote bool, err error) {
	uid, _, server, err := parseUserIDParam(mux.Vars(r)["userId"])
	if err != nil {
		return nil, true, err
	}
	if server == a.cfg.ServerName {
		return nil, false, nil
	}
	if a.opts.RemoteProfiles == nil {
		return nil, true, httputil.NotFound("Profiles of users of other servers are not available without federation")
	}
	profile, err = a.opts.RemoteProfiles.QueryRemoteProfile(r.Context(), uid, field)
	if err != nil {
		var me *httputil.Error
		if errors.As(err, &me) {
			return nil, true, me
		}
		// The spec's answers are 200, 403 and 404: a server that cannot be
		// reached has no profile to give.
		slog.InfoContext(r.Context(), "querying a remote profile failed", "user_id", uid, "err", err)
		return nil, true, httputil.NotFound("Could not fetch the profile from %s", server)
	}
	return profile, true, nil
}
