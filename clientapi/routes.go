// Package clientapi implements the Matrix client-server API, one file per spec
// module, each registering its own routes.
package clientapi

import (
	"net/http"

	"github.com/gorilla/mux"
)

// Versions of the path prefix an endpoint is served under.
var (
	// v3R0 is for endpoints that existed in r0: clients in the wild still call them
	// there, so r0 is served as an alias of v3 (as Synapse and Dendrite do).
	v3R0 = []string{"v3", "r0"}
	// v3Only is for endpoints added after r0.
	v3Only = []string{"v3"}
	// v1Only is for endpoints introduced under /v1.
	v1Only = []string{"v1"}
)

// handle registers h for path under each version prefix with the given methods.
func handle(r *mux.Router, versions []string, path string, h http.HandlerFunc, methods ...string) {
	for _, v := range versions {
		r.HandleFunc("/"+v+path, h).Methods(methods...)
	}
}
