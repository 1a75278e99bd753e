package clientapi

import (
	"hearth/config"
	"hearth/httputil"
)

// API is the client-server API component.
type API struct {
	cfg *config.Config
}

// New creates the client API.
func New(cfg *config.Config) *API {
	return &API{cfg: cfg}
}

// Register adds the client API's routes.
func (a *API) Register(r httputil.Routers) {
	registerVersions(r.Client)
}
