package httputil

import "github.com/gorilla/mux"

// Routers are the path-prefix routers components register their endpoints on.
type Routers struct {
	Client       *mux.Router // /_matrix/client
	Federation   *mux.Router // /_matrix/federation
	Key          *mux.Router // /_matrix/key
	Media        *mux.Router // /_matrix/media
	SynapseAdmin *mux.Router // /_synapse/admin
	WellKnown    *mux.Router // /.well-known/matrix
}
