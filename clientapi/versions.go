package clientapi

import (
	"net/http"

	"github.com/gorilla/mux"

	"hearth/httputil"
)

// specVersions are the client-server API versions Hearth serves.
var specVersions = []string{
	"r0.0.1", "r0.1.0", "r0.2.0", "r0.3.0", "r0.4.0", "r0.5.0", "r0.6.0", "r0.6.1",
	"v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10",
	"v1.11", "v1.12", "v1.13", "v1.14", "v1.15", "v1.16",
}

// registerVersions serves GET /_matrix/client/versions (no auth), advertising
// the given unstable features (MSCs).
func registerVersions(r *mux.Router, unstable map[string]bool) {
	body := map[string]any{
		"versions":          specVersions,
		"unstable_features": unstable,
	}
	r.HandleFunc("/versions", func(w http.ResponseWriter, req *http.Request) {
		httputil.RespondJSON(w, http.StatusOK, body)
	}).Methods(http.MethodGet)
}

// unstableFeatures are the MSCs this server implements, as /versions
// advertises them under their unstable feature names.
func (a *API) unstableFeatures() map[string]bool {
	f := map[string]bool{
		"org.matrix.msc4155": true, // invite filtering (invitefilter.go)
	}
	if a.opts.Roomserver != nil {
		f["org.matrix.msc4306"] = true // thread subscriptions (threadsubs.go)
		if a.cfg.DelayedEvents.MaxDelayMS > 0 {
			f["org.matrix.msc4140"] = true // delayed events (delayed.go)
		}
	}
	return f
}
