// Package server assembles Hearth: it owns the HTTP routers and middleware, the
// listeners and graceful shutdown, and hands each component the routers it serves.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"hearth/config"
	"hearth/httputil"
)

// HTTP is the HTTP face of a Hearth process.
type HTTP struct {
	cfg        *config.Config
	clientRoot *mux.Router
	fedRoot    *mux.Router
	Routers    httputil.Routers
	metrics    *httpMetrics
	registry   *prometheus.Registry

	servers []*http.Server

	// FederationTLS, when set before Start, makes the federation listener serve
	// HTTPS (Server-Server API, "TLS").
	FederationTLS *tls.Config
}

// NewHTTP builds the routers and middleware. reg receives the HTTP metrics.
func NewHTTP(cfg *config.Config, reg *prometheus.Registry) *HTTP {
	h := &HTTP{cfg: cfg, clientRoot: mux.NewRouter(), fedRoot: mux.NewRouter(), registry: reg}
	h.metrics = newHTTPMetrics(reg)
	for _, root := range []*mux.Router{h.clientRoot, h.fedRoot} {
		// Room v3 event IDs are standard base64 and may contain "//": paths are
		// matched as sent, never "cleaned" into a redirect.
		root.SkipClean(true)
		root.NotFoundHandler = notFound(root)
		root.MethodNotAllowedHandler = http.HandlerFunc(methodNotAllowed)
		root.Use(labelRoute)
	}
	h.Routers = httputil.Routers{
		Client:       subrouter(h.clientRoot, "/_matrix/client"),
		Media:        subrouter(h.clientRoot, "/_matrix/media"),
		SynapseAdmin: subrouter(h.clientRoot, "/_synapse/admin"),
		WellKnown:    subrouter(h.clientRoot, "/.well-known/matrix"),
		Federation:   subrouter(h.fedRoot, "/_matrix/federation"),
		Key:          subrouter(h.fedRoot, "/_matrix/key"),
	}
	// The client listener serves the federation prefixes too, as Synapse's and
	// Dendrite's do: behind a reverse proxy terminating TLS, federation arrives there.
	// Federation requests are authenticated by their X-Matrix signatures, not by
	// the transport. The federation router matches the full path again.
	h.clientRoot.PathPrefix("/_matrix/federation/").Handler(h.fedRoot)
	h.clientRoot.PathPrefix("/_matrix/key/").Handler(h.fedRoot)
	if cfg.Listen.Federation != "" {
		// Remote servers fetch media over the federation port too.
		h.fedRoot.PathPrefix("/_matrix/media/").Handler(h.clientRoot)
	}
	if cfg.Metrics.Enabled && cfg.Metrics.Listen == "" {
		h.clientRoot.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{})).Methods(http.MethodGet)
	}
	h.registerWellKnown()
	return h
}

func subrouter(root *mux.Router, prefix string) *mux.Router {
	r := root.PathPrefix(prefix).Subrouter()
	r.NotFoundHandler = root.NotFoundHandler
	r.MethodNotAllowedHandler = root.MethodNotAllowedHandler
	return r
}

// notFound answers an unmatched request: 405 when the path exists under another
// method, else 404 M_UNRECOGNIZED. gorilla/mux loses the method mismatch when a later
// route in the same subrouter fails on its path, so the check is made here, on the
// (rare) unmatched path only.
func notFound(root *mux.Router) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, m := range [...]string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
			if m == r.Method {
				continue
			}
			probe := r.Clone(r.Context())
			probe.Method = m
			var match mux.RouteMatch
			if root.Match(probe, &match) && match.MatchErr == nil {
				httputil.RespondError(w, r, httputil.MethodNotAllowed())
				return
			}
		}
		httputil.RespondError(w, r, httputil.Unrecognized("Unrecognized request: %s %s", r.Method, r.URL.Path))
	})
}

func methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	httputil.RespondError(w, r, httputil.MethodNotAllowed())
}

// registerWellKnown serves /.well-known/matrix/client and /server (Client-Server
// API "Server Discovery"; Server-Server API "Resolving server names").
func (h *HTTP) registerWellKnown() {
	h.Routers.WellKnown.HandleFunc("/client", func(w http.ResponseWriter, r *http.Request) {
		httputil.RespondJSON(w, http.StatusOK, map[string]any{
			"m.homeserver": map[string]string{"base_url": h.cfg.BaseURL()},
		})
	}).Methods(http.MethodGet)
	h.Routers.WellKnown.HandleFunc("/server", func(w http.ResponseWriter, r *http.Request) {
		httputil.RespondJSON(w, http.StatusOK, map[string]string{"m.server": h.cfg.FederationServer()})
	}).Methods(http.MethodGet)
}

// ClientHandler is the full handler chain of the client listener.
func (h *HTTP) ClientHandler() http.Handler { return h.wrap(h.clientRoot) }

// FederationHandler is the full handler chain of the federation listener.
func (h *HTTP) FederationHandler() http.Handler { return h.wrap(h.fedRoot) }

// wrap adds the middleware every request passes through, outermost first: panic
// recovery, metrics, CORS (answering preflights for every path), the request-body limit.
func (h *HTTP) wrap(next http.Handler) http.Handler {
	limit := h.cfg.Limits.MaxRequestBodyBytes
	return recoverPanics(h.metrics.middleware(cors(bodyLimit(limit, next))))
}

// federationBodyLimit is the least request-body limit of /_matrix/federation: a
// transaction of 50 PDUs and 100 EDUs of up to 64 KiB each is about 10 MB.
const federationBodyLimit = 16 << 20

func recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				slog.Error("panic serving request", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(p))
				httputil.RespondJSON(w, http.StatusInternalServerError, &httputil.Error{Status: 500, ErrCode: "M_UNKNOWN", Message: "Internal server error"})
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// cors implements the Client-Server API's "Web Browser Clients" section: every
// response carries the CORS headers, and OPTIONS preflights are answered directly.
func cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Access-Control-Allow-Origin", "*")
		hd.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
		hd.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization")
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// bodyLimit caps request bodies. Media uploads raise the cap for their own routes by
// wrapping r.Body again themselves; a declared Content-Length over the limit is
// refused before the handler runs.
func bodyLimit(limit int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isUpload(r) {
			next.ServeHTTP(w, r)
			return
		}
		limit := limit
		if strings.HasPrefix(r.URL.Path, "/_matrix/federation/") {
			limit = max(limit, federationBodyLimit)
		}
		if r.ContentLength > limit {
			httputil.RespondError(w, r, httputil.TooLarge("Request body exceeds %d bytes", limit))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		next.ServeHTTP(w, r)
	})
}

// isUpload reports whether r is a media upload, which has its own size limit.
func isUpload(r *http.Request) bool {
	return (r.Method == http.MethodPost || r.Method == http.MethodPut) && strings.HasPrefix(r.URL.Path, "/_matrix/media/") && strings.Contains(r.URL.Path, "/upload")
}

// Listeners are the bound addresses of a running HTTP face.
type Listeners struct {
	Client     net.Addr
	Federation net.Addr // nil when federation shares the client listener
	Metrics    net.Addr // nil unless metrics have their own listener
}

// Start binds the configured listeners and serves until Shutdown.
func (h *HTTP) Start() (Listeners, error) {
	var ls Listeners
	serve := func(addr string, handler http.Handler, tlsConf *tls.Config) (net.Addr, error) {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listening on %s: %w", addr, err)
		}
		srv := &http.Server{
			Handler:           handler,
			ReadHeaderTimeout: 20 * time.Second,
			IdleTimeout:       120 * time.Second,
			ErrorLog:          slog.NewLogLogger(slog.Default().Handler(), slog.LevelDebug),
		}
		h.servers = append(h.servers, srv)
		go func() {
			var err error
			if tlsConf != nil {
				srv.TLSConfig = tlsConf
				err = srv.ServeTLS(l, "", "")
			} else {
				err = srv.Serve(l)
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				slog.Error("listener stopped", "addr", addr, "err", err)
			}
		}()
		return l.Addr(), nil
	}
	var err error
	if ls.Client, err = serve(h.cfg.Listen.Client, h.ClientHandler(), nil); err != nil {
		return ls, err
	}
	if h.cfg.Listen.Federation != "" {
		if ls.Federation, err = serve(h.cfg.Listen.Federation, h.FederationHandler(), h.FederationTLS); err != nil {
			h.Shutdown(context.Background())
			return ls, err
		}
	}
	if h.cfg.Metrics.Enabled && h.cfg.Metrics.Listen != "" {
		m := http.NewServeMux()
		m.Handle("/metrics", promhttp.HandlerFor(h.registry, promhttp.HandlerOpts{}))
		if ls.Metrics, err = serve(h.cfg.Metrics.Listen, m, nil); err != nil {
			h.Shutdown(context.Background())
			return ls, err
		}
	}
	return ls, nil
}

// Shutdown stops accepting connections and waits for in-flight requests until ctx ends.
func (h *HTTP) Shutdown(ctx context.Context) error {
	var errs []error
	for _, s := range h.servers {
		errs = append(errs, s.Shutdown(ctx))
	}
	return errors.Join(errs...)
}
