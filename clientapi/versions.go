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

// registerVersions serves GET /_matrix/client/versions (no auth).
func registerVersions(r *mux.Router) {
	body := map[string]any{
		"versions":          specVersions,
		"unstable_features": map[string]bool{},
	}
	r.HandleFunc("/versions", func(w http.ResponseWriter, req *http.Request) {
		httputil.RespondJSON(w, http.StatusOK, body)
	}).Methods(http.MethodGet)
}
