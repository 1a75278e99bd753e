// Package mediaapi is Hearth's media repository: uploads (direct and asynchronous),
// downloads with safe headers and Range support, thumbnails, content-addressed
// storage on disk with metadata in the database, the federation media endpoints,
// fetching and caching remote media, and URL previews.
//
// Endpoints (a reader finds each handler from its URL here):
//
//	POST /_matrix/media/{v3,r0}/upload                        upload.go  upload
//	POST /_matrix/media/v1/create                             upload.go  createMXC
//	PUT  /_matrix/media/v3/upload/{serverName}/{mediaId}      upload.go  uploadToMXC
//	GET  /_matrix/client/v1/media/config, /_matrix/media/{v3,r0}/config         mediaConfig
//	GET  /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}]  download.go
//	GET  /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}              thumbnail.go
//	GET  /_matrix/media/{v3,r0}/download/..., /thumbnail/...  legacy, unauthenticated (media.legacy_unauthenticated)
//	GET  /_matrix/client/v1/media/preview_url, /_matrix/media/{v3,r0}/preview_url  preview.go
//	GET  /_matrix/federation/v1/media/download/{mediaId}      federation.go
//	GET  /_matrix/federation/v1/media/thumbnail/{mediaId}     federation.go
package mediaapi

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/httputil"
	"hearth/storage"
)

// Requester is the local user making an authenticated media request.
type Requester struct {
	UserID  id.UserID
	IsGuest bool
}

// Authenticator resolves a request's access token to its user, or returns the
// Matrix error to answer with (M_MISSING_TOKEN, M_UNKNOWN_TOKEN …). The server
// wiring adapts the client API's Authenticate to it.
type Authenticator func(r *http.Request) (Requester, error)

// RequestVerifier authenticates a server-server request (Server-Server API,
// "Request Authentication": the X-Matrix Authorization header) and returns the
// origin server name, or a Matrix error (401 M_UNAUTHORIZED …). The default is
// mautrix's ServerAuth with an in-memory key cache; the federation component can
// install its own key ring with SetRequestVerifier.
type RequestVerifier interface {
	VerifyRequest(r *http.Request) (origin string, err error)
}

const (
	// dialTimeout bounds connecting to another server or a previewed site.
	dialTimeout = 10 * time.Second
	// pendingUploadLifetime is how long a media ID from /create stays usable
	// (the spec recommends 24 hours).
	pendingUploadLifetime = 24 * time.Hour
	// maxPendingUploads bounds the unexpired /create reservations per user.
	maxPendingUploads = 50
	// defaultWait and maxWait bound timeout_ms when media is not uploaded yet.
	defaultWait = 20 * time.Second
	maxWait     = 60 * time.Second
)

// API is the media repository component.
type API struct {
	cfg        *config.Config
	serverName string
	mdb        mediaDB
	store      *blobStore
	auth       Authenticator
	metrics    *metrics

	verifier atomic.Pointer[verifierBox]

	// fed fetches remote media; nil when federation is disabled.
	fed          *federation.Client
	fedTransport *swappableTransport
	fedFilter    *ipFilter

	preview       *http.Client
	previewFilter *ipFilter

	// thumbSem bounds concurrent image decodes (each may take ~4 bytes per pixel).
	thumbSem   chan struct{}
	thumbGroup singleflight.Group
	fetchGroup singleflight.Group
	// previewGroup shares one fetch among concurrent previews of a URL.
	previewGroup singleflight.Group
	uploads      *uploadWaiters

	// pregen queues images for background thumbnailing after upload.
	pregen   chan *mediaRow
	bgCtx    context.Context
	bgCancel context.CancelFunc
	bgWG     sync.WaitGroup
	closed   sync.Once
}

type verifierBox struct{ v RequestVerifier }

// New creates the media repository. key signs outbound federation requests; auth
// resolves access tokens; reg receives the media metrics (nil: none are exported).
func New(cfg *config.Config, db *storage.DB, key *config.SigningKey, auth Authenticator, reg *prometheus.Registry) (*API, error) {
	if cfg == nil || db == nil || key == nil || auth == nil {
		return nil, errors.New("mediaapi: config, database, signing key and authenticator are required")
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	workers := max(1, min(4, runtime.GOMAXPROCS(0)/2))
	a := &API{
		cfg:        cfg,
		serverName: cfg.ServerName,
		mdb:        mediaDB{db: db},
		store:      newBlobStore(cfg.MediaPath()),
		auth:       auth,
		metrics:    m,
		thumbSem:   make(chan struct{}, workers),
		uploads:    newUploadWaiters(),
		pregen:     make(chan *mediaRow, 256),
	}
	a.store.cleanTmp()
	if a.previewFilter, err = newIPFilter(cfg.Media.URLPreview.AllowedCIDRs, cfg.Media.URLPreview.DeniedCIDRs); err != nil {
		return nil, fmt.Errorf("media.url_preview: %w", err)
	}
	a.preview = newPreviewClient(a.previewFilter, time.Duration(cfg.Media.RemoteTimeoutSeconds)*time.Second)
	if cfg.Federation.Enabled {
		if err := a.initFederation(key); err != nil {
			return nil, err
		}
	}
	a.bgCtx, a.bgCancel = context.WithCancel(context.Background())
	for range workers {
		a.bgWG.Add(1)
		go a.pregenWorker()
	}
	return a, nil
}

// initFederation builds the federation client used to fetch remote media and the
// default request verifier.
func (a *API) initFederation(key *config.SigningKey) error {
	var err error
	if a.fedFilter, err = newIPFilter(a.cfg.Federation.AllowedCIDRs, a.cfg.Federation.DeniedCIDRs); err != nil {
		return fmt.Errorf("federation: %w", err)
	}
	tlsConf, err := federationTLSConfig(a.cfg)
	if err != nil {
		return err
	}
	pub := key.Public()
	fkey := &federation.SigningKey{
		ID:   id.KeyID(key.ID),
		Pub:  id.SigningKey(base64.RawStdEncoding.EncodeToString(pub)),
		Priv: ed25519.PrivateKey(key.PrivateKey),
	}
	settings := federationClientSettings(tlsConf)
	c := federation.NewClient(a.serverName, fkey, nil, settings)
	c.AllowIP = a.fedFilter.AllowedIP
	c.HTTP.Timeout = 0 // each fetch has its own deadline
	c.ExtHTTP.Timeout = 0
	// Server discovery fetches /.well-known/matrix/server; route it through the
	// filtered client rather than http.DefaultClient.
	if srt, ok := c.HTTP.Transport.(*federation.ServerResolvingTransport); ok {
		srt.ResolveOpts = &federation.ResolveServerNameOpts{HTTPClient: c.ExtHTTP}
	}
	a.fedTransport = newSwappableTransport(c.HTTP.Transport)
	c.HTTP.Transport = a.fedTransport
	a.fed = c
	keys := federation.NewInMemoryCache()
	keys.MinKeyRefetchDelay = 5 * time.Minute
	a.SetRequestVerifier(NewServerAuthVerifier(a.serverName, c, keys))
	return nil
}

// SetRequestVerifier replaces the verifier of inbound federation media requests.
// Safe to call while serving.
func (a *API) SetRequestVerifier(v RequestVerifier) {
	a.verifier.Store(&verifierBox{v: v})
}

// SetFederationTransport replaces how outbound federation requests (remote media,
// key fetches of the default verifier) are carried. The RoundTripper receives
// requests whose URL is matrix-federation://<server name>/<path>, already signed;
// the default resolves server names (Server-Server API, "Resolving server names")
// and speaks TLS. Tests install a plain-HTTP transport here, and the federation
// component may install its shared one. Transports should dial through
// (*API).DialFederation to keep the federation.allowed_cidrs/denied_cidrs
// filter. Safe to call while serving; a no-op when federation is disabled.
func (a *API) SetFederationTransport(rt http.RoundTripper) {
	if a.fedTransport != nil {
		a.fedTransport.set(rt)
	}
}

// DialFederation dials addr ("ip:port") for an outbound federation request,
// refusing addresses that federation.allowed_cidrs/denied_cidrs filter out.
func (a *API) DialFederation(ctx context.Context, network, addr string) (net.Conn, error) {
	f := a.fedFilter
	if f == nil {
		return nil, errors.New("federation is disabled")
	}
	return f.dialer().DialContext(ctx, network, addr)
}

// Close stops background thumbnailing and waits for it to finish.
func (a *API) Close() error {
	a.closed.Do(func() {
		a.bgCancel()
		a.bgWG.Wait()
	})
	return nil
}

// Register adds the media routes: uploads and the legacy endpoints on the media
// router, authenticated media on the client router, and the federation endpoints.
func (a *API) Register(r httputil.Routers) {
	get := []string{http.MethodGet, http.MethodHead}
	for _, v := range []string{"v3", "r0"} {
		p := "/" + v
		r.Media.HandleFunc(p+"/upload", a.authed(a.upload, false)).Methods(http.MethodPost)
		r.Media.HandleFunc(p+"/config", a.authed(a.mediaConfig, true)).Methods(http.MethodGet)
		r.Media.HandleFunc(p+"/preview_url", a.authed(a.previewURL, false)).Methods(http.MethodGet)
		r.Media.HandleFunc(p+"/download/{serverName}/{mediaId}", a.legacy(a.download)).Methods(get...)
		r.Media.HandleFunc(p+"/download/{serverName}/{mediaId}/{fileName}", a.legacy(a.download)).Methods(get...)
		r.Media.HandleFunc(p+"/thumbnail/{serverName}/{mediaId}", a.legacy(a.thumbnail)).Methods(get...)
	}
	// Asynchronous upload exists from v1.7 on only (no r0).
	r.Media.HandleFunc("/v3/upload/{serverName}/{mediaId}", a.authed(a.uploadToMXC, false)).Methods(http.MethodPut)
	r.Media.HandleFunc("/v1/create", a.authed(a.createMXC, false)).Methods(http.MethodPost)

	c := r.Client.PathPrefix("/v1/media").Subrouter()
	// Every authenticated media path needs an access token, including ones
	// that match no endpoint (a malformed media ID): without a token the
	// answer is 401, not 404 or 405, so nothing is learnt without one.
	c.NotFoundHandler = a.authFirst(r.Client.NotFoundHandler, http.StatusNotFound)
	c.MethodNotAllowedHandler = a.authFirst(r.Client.MethodNotAllowedHandler, http.StatusMethodNotAllowed)
	c.HandleFunc("/config", a.authed(a.mediaConfig, true)).Methods(http.MethodGet)
	c.HandleFunc("/preview_url", a.authed(a.previewURL, false)).Methods(http.MethodGet)
	c.HandleFunc("/download/{serverName}/{mediaId}", a.authedDownload(a.download)).Methods(get...)
	c.HandleFunc("/download/{serverName}/{mediaId}/{fileName}", a.authedDownload(a.download)).Methods(get...)
	c.HandleFunc("/thumbnail/{serverName}/{mediaId}", a.authedDownload(a.thumbnail)).Methods(get...)

	if a.fed != nil {
		f := r.Federation.PathPrefix("/v1/media").Subrouter()
		f.NotFoundHandler, f.MethodNotAllowedHandler = r.Federation.NotFoundHandler, r.Federation.MethodNotAllowedHandler
		f.HandleFunc("/download/{mediaId}", a.federationAuthed(a.federationDownload)).Methods(http.MethodGet)
		f.HandleFunc("/thumbnail/{mediaId}", a.federationAuthed(a.federationThumbnail)).Methods(http.MethodGet)
	}
}

// mediaConfig answers GET /_matrix/client/v1/media/config.
func (a *API) mediaConfig(w http.ResponseWriter, r *http.Request, _ Requester) error {
	httputil.RespondJSON(w, http.StatusOK, map[string]int64{"m.upload.size": a.cfg.Media.MaxUploadBytes})
	return nil
}

// authedFunc handles an authenticated request.
type authedFunc func(w http.ResponseWriter, r *http.Request, req Requester) error

// downloadFunc serves content; req is nil on the legacy unauthenticated endpoints.
type downloadFunc func(w http.ResponseWriter, r *http.Request, req *Requester) error

func (a *API) authed(h authedFunc, allowGuests bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		req, err := a.auth(r)
		if err == nil && req.IsGuest && !allowGuests {
			err = httputil.GuestAccessForb("Guest accounts cannot use this endpoint")
		}
		if err == nil {
			err = h(w, r, req)
		}
		if err != nil {
			respondErr(w, r, err)
		}
	}
}

// authFirst answers with h (or, when h is nil, a bare status) only once the
// request is authenticated (guests included).
func (a *API) authFirst(h http.Handler, status int) http.Handler {
	if h == nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(status) })
	}
	return a.authed(func(w http.ResponseWriter, r *http.Request, _ Requester) error {
		h.ServeHTTP(w, r)
		return nil
	}, true)
}

// authedDownload wraps the authenticated download and thumbnail endpoints (guests
// may read media).
func (a *API) authedDownload(h downloadFunc) http.HandlerFunc {
	return a.authed(func(w http.ResponseWriter, r *http.Request, req Requester) error {
		return h(w, r, &req)
	}, true)
}

// legacy wraps the deprecated unauthenticated endpoints: served only when
// media.legacy_unauthenticated is on; otherwise they answer as the spec lets a
// server that has "frozen" unauthenticated media (Client-Server API, "Content
// repository", Client behaviour): 404 M_NOT_FOUND.
func (a *API) legacy(h downloadFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var err error
		if a.cfg.Media.LegacyUnauthenticated {
			err = h(w, r, nil)
		} else {
			err = httputil.NotFound("Unauthenticated media access is disabled on this server; use /_matrix/client/v1/media")
		}
		if err != nil {
			respondErr(w, r, err)
		}
	}
}

// respondErr writes a handler's error. Media errors with 5xx statuses that mean
// something to the caller (502 M_TOO_LARGE, 504 M_NOT_YET_UPLOADED, 502 for an
// unreachable remote server) are written as they are; httputil turns every other
// 5xx into a generic internal error.
func respondErr(w http.ResponseWriter, r *http.Request, err error) {
	var me *httputil.Error
	if errors.As(err, &me) && (me.Status == http.StatusBadGateway || me.Status == http.StatusGatewayTimeout) {
		httputil.RespondJSON(w, me.Status, me)
		return
	}
	if errors.As(err, &me) && me.Status == http.StatusTooManyRequests {
		if ms, ok := me.Extra["retry_after_ms"].(int64); ok {
			w.Header().Set("Retry-After", fmt.Sprint((ms+999)/1000))
		}
	}
	httputil.RespondError(w, r, err)
}

// Media errors beyond httputil's.
var (
	errNotYetUploaded  = &httputil.Error{Status: http.StatusGatewayTimeout, ErrCode: "M_NOT_YET_UPLOADED", Message: "Content has not yet been uploaded"}
	errCannotOverwrite = &httputil.Error{Status: http.StatusConflict, ErrCode: "M_CANNOT_OVERWRITE_MEDIA", Message: "Media already uploaded"}
)

// remoteTooLarge is 502 M_TOO_LARGE (remote content over a limit).
func remoteTooLarge(format string, args ...any) *httputil.Error {
	return &httputil.Error{Status: http.StatusBadGateway, ErrCode: "M_TOO_LARGE", Message: fmt.Sprintf(format, args...)}
}

// badGateway is 502 M_UNKNOWN: the remote server could not be used.
func badGateway(format string, args ...any) *httputil.Error {
	return &httputil.Error{Status: http.StatusBadGateway, ErrCode: "M_UNKNOWN", Message: fmt.Sprintf(format, args...)}
}

// internalErr wraps an unexpected failure as a 500 whose detail is logged, not sent.
func internalErr(err error) error { return httputil.Internal("%v", err) }

func nowMS() int64 { return time.Now().UnixMilli() }

func mxcURI(serverName, mediaID string) string { return "mxc://" + serverName + "/" + mediaID }

// routeVars returns the named path variables of a request.
func routeVars(r *http.Request) map[string]string { return mux.Vars(r) }

// uploadWaiters lets downloads wait for a pending asynchronous upload to arrive.
type uploadWaiters struct {
	mu sync.Mutex
	m  map[string]*waiter
}

type waiter struct {
	ch chan struct{}
	n  int
}

func newUploadWaiters() *uploadWaiters { return &uploadWaiters{m: map[string]*waiter{}} }

// wait blocks until done(key) is called, d passes or ctx ends.
func (u *uploadWaiters) wait(ctx context.Context, key string, d time.Duration) {
	u.mu.Lock()
	w := u.m[key]
	if w == nil {
		w = &waiter{ch: make(chan struct{})}
		u.m[key] = w
	}
	w.n++
	u.mu.Unlock()
	t := time.NewTimer(d)
	select {
	case <-w.ch:
	case <-t.C:
	case <-ctx.Done():
	}
	t.Stop()
	u.mu.Lock()
	w.n--
	if w.n == 0 && u.m[key] == w {
		delete(u.m, key)
	}
	u.mu.Unlock()
}

// done wakes everyone waiting for key.
func (u *uploadWaiters) done(key string) {
	u.mu.Lock()
	if w := u.m[key]; w != nil {
		close(w.ch)
		delete(u.m, key)
	}
	u.mu.Unlock()
}

// QuarantineMedia hides media from every download endpoint (for admins). It
// reports whether the media existed.
func (a *API) QuarantineMedia(ctx context.Context, serverName, mediaID string, quarantined bool) (bool, error) {
	return a.mdb.setQuarantined(ctx, serverName, mediaID, quarantined)
}

// DeleteMedia removes media and its thumbnails, and the files nothing else uses
// (for admins).
func (a *API) DeleteMedia(ctx context.Context, serverName, mediaID string) error {
	blobs, err := a.mdb.deleteMedia(ctx, serverName, mediaID)
	if err != nil {
		return err
	}
	var errs []error
	for _, sha := range blobs {
		errs = append(errs, a.store.removeIfUnreferenced(sha, func() (bool, error) {
			return a.mdb.blobReferenced(ctx, sha)
		}))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	slog.Info("deleted media", "mxc", mxcURI(serverName, mediaID), "files", len(blobs))
	return nil
}
