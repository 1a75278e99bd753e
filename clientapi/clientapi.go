package clientapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"maunium.net/go/mautrix/id"

	"hearth/appservice"
	"hearth/clientapi/accounts"
	"hearth/clientapi/e2ee"
	"hearth/config"
	"hearth/httputil"
	"hearth/roomserver"
	"hearth/storage"
)

// MembershipUpdater propagates profile changes to the rooms a user is joined to,
// as new m.room.member events (Client-Server API, "Events on Change of Profile
// Information"). It is implemented by the room engine; nil until it exists.
type MembershipUpdater interface {
	UpdateProfileInRooms(ctx context.Context, userID id.UserID, displayName, avatarURL string) error
}

// RoomLeaver makes a deactivated user leave every room they are in. It is
// implemented by the room engine; nil until it exists.
type RoomLeaver interface {
	LeaveAllRooms(ctx context.Context, userID id.UserID) error
}

// DeviceKeysDeleter removes the end-to-end encryption keys of deleted devices.
// It is implemented by the keys module; nil until it exists.
type DeviceKeysDeleter interface {
	DeleteDeviceKeys(ctx context.Context, userID id.UserID, deviceIDs []id.DeviceID) error
}

// Options are the client API's collaborators; each may be nil.
type Options struct {
	Membership MembershipUpdater
	Rooms      RoomLeaver
	DeviceKeys DeviceKeysDeleter
	// Keys is the end-to-end encryption module; the E2EE endpoints are served
	// only with it. RemoteKeys and RemoteToDevice reach users on other servers
	// (nil until federation provides them).
	Keys           *e2ee.Service
	RemoteKeys     RemoteKeys
	RemoteToDevice RemoteToDevice
	// Roomserver is the room engine; the room, message and directory endpoints
	// are served only with it. RemoteJoiner, RemoteInviter and RemoteAliases
	// reach rooms, users and aliases of other servers (nil until federation
	// provides them).
	Roomserver    *roomserver.Roomserver
	RemoteJoiner  RemoteJoiner
	RemoteInviter RemoteInviter
	RemoteAliases RemoteAliasResolver
	// RemoteHierarchy describes spaces on other servers for GET /hierarchy
	// (nil without federation).
	RemoteHierarchy RemoteHierarchy
	// RemoteKnocker knocks on rooms of other servers (nil without federation).
	RemoteKnocker RemoteKnocker
	// RemoteInviteRejecter rejects invites from other servers to rooms this
	// server is not in; RemoteProfiles looks up profiles of users of other
	// servers (nil without federation).
	RemoteInviteRejecter RemoteInviteRejecter
	RemoteProfiles       RemoteProfiles
	// Backfiller fetches history from other servers when /messages pages back
	// past the oldest event this server has (nil without federation).
	Backfiller Backfiller
	// RemoteTimestamps asks other servers for the event closest to a time when
	// this server's history may lack it (GET /timestamp_to_event; nil without
	// federation).
	RemoteTimestamps RemoteTimestamps
	// Sync is the /sync machinery (NewSyncer); /sync, typing, receipts,
	// read markers, presence and the user directory are served only with it.
	Sync *Syncer
	// AppServices are the registered application services (nil: none); their
	// as_tokens authenticate them (appservice.go).
	AppServices *appservice.Service
}

// DefaultAccessTokenLifetime is how long an access token lasts when the client
// asked for a refresh token (Synapse's default for refreshable tokens).
const DefaultAccessTokenLifetime = 5 * time.Minute

// loginTokenLifetime is how long an m.login.token from /login/get_token lasts.
const loginTokenLifetime = 2 * time.Minute

// API is the client-server API component.
type API struct {
	cfg      *config.Config
	db       *storage.DB
	accounts *accounts.Store
	opts     Options
	// rooms is the state of the room endpoints (rooms.go); nil without a room engine.
	rooms *roomState

	tokens        *tokenCache
	loginLimit    *rateLimiter
	registerLimit *rateLimiter
	pushRules     *evaluatorCache
	push          *pushSender
	nonces        *nonceStore
	// tokenLifetime is the lifetime (ns) of refreshable access tokens.
	tokenLifetime atomic.Int64
	// appServiceUsers caches the accounts application services act as.
	appServiceUsers appServiceUserCache
	// notices sends server notices (servernotices.go); nil when they are off.
	notices *serverNotices
	// delayed schedules delayed events (delayed.go); nil when they are off.
	delayed *delayedEvents
}

// New creates the client API over the given database.
func New(cfg *config.Config, db *storage.DB, opts Options) (*API, error) {
	if cfg == nil || db == nil {
		return nil, errors.New("clientapi: config and database are required")
	}
	a := &API{
		cfg:       cfg,
		db:        db,
		accounts:  accounts.NewStore(db, cfg.ServerName),
		opts:      opts,
		tokens:    newTokenCache(100_000, time.Minute),
		pushRules: newEvaluatorCache(10_000),
		nonces:    newNonceStore(time.Minute),
	}
	if cfg.RateLimits.Enabled {
		a.loginLimit = newRateLimiter(cfg.RateLimits.PerSecond, cfg.RateLimits.Burst)
		a.registerLimit = newRateLimiter(cfg.RateLimits.PerSecond, cfg.RateLimits.Burst)
	}
	a.tokenLifetime.Store(int64(DefaultAccessTokenLifetime))
	a.push = newPushSender(a)
	return a, nil
}

// Accounts is the account store the API uses.
func (a *API) Accounts() *accounts.Store { return a.accounts }

// SetAccessTokenLifetime changes the lifetime of access tokens issued with a
// refresh token (tests use short ones). Safe to call while serving.
func (a *API) SetAccessTokenLifetime(d time.Duration) { a.tokenLifetime.Store(int64(d)) }

func (a *API) accessTokenLifetime() time.Duration { return time.Duration(a.tokenLifetime.Load()) }

// Register adds the client API's routes.
func (a *API) Register(r httputil.Routers) {
	registerVersions(r.Client, a.unstableFeatures())
	a.registerAuthRoutes(r.Client)
	a.registerAccountRoutes(r.Client)
	a.registerDeviceRoutes(r.Client)
	a.registerProfileRoutes(r.Client)
	a.registerAccountDataRoutes(r.Client)
	a.registerFilterRoutes(r.Client)
	a.registerCapabilityRoutes(r.Client)
	a.registerPushRuleRoutes(r.Client)
	a.registerE2EERoutes(r.Client)
	a.registerRoomRoutes(r.Client)
	a.registerHierarchyRoutes(r.Client)
	a.registerSearchRoutes(r.Client)
	a.registerSyncRoutes(r.Client)
	a.registerAdminRoutes(r.SynapseAdmin)
	a.registerAppServiceRoutes(r.Client)
	a.registerServerNoticeRoutes(r.SynapseAdmin)
	a.registerThreadSubscriptionRoutes(r.Client)
	a.registerDelayedEventRoutes(r.Client)
}

// userID is the full user ID of a local localpart.
func (a *API) userID(localpart string) id.UserID {
	return id.UserID(a.accounts.UserID(localpart))
}

// handlerFunc is an unauthenticated handler that reports failure as an error.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// authedFunc is a handler for an authenticated request.
type authedFunc func(w http.ResponseWriter, r *http.Request, d *Device) error

// public adapts an unauthenticated handler.
func (a *API) public(h handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			respondErr(w, r, err)
		}
	}
}

// respondErr writes an error: a UIA challenge as the spec's 401 body, a rate
// limit with its Retry-After header, anything else through httputil.
func respondErr(w http.ResponseWriter, r *http.Request, err error) {
	var ch *uiaChallenge
	if errors.As(err, &ch) {
		httputil.RespondJSON(w, http.StatusUnauthorized, ch)
		return
	}
	var me *httputil.Error
	if errors.As(err, &me) && me.Status == http.StatusTooManyRequests {
		if ms, ok := me.Extra["retry_after_ms"].(int64); ok {
			w.Header().Set("Retry-After", fmt.Sprint((ms+999)/1000))
		}
	}
	httputil.RespondError(w, r, err)
}

// internalErr wraps an unexpected failure as a 500 whose detail is logged, not
// sent.
func internalErr(err error) error {
	return httputil.Internal("%v", err)
}

// logIfErr logs a failure of follow-up work that must not fail the request.
func logIfErr(ctx context.Context, what string, err error) {
	if err != nil {
		slog.ErrorContext(ctx, what, "err", err)
	}
}

// nonceStore keeps shared-secret registration nonces for a limited time.
type nonceStore struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[string]time.Time
}

// maxNonces bounds the live nonces; beyond it, arbitrary old ones are dropped.
const maxNonces = 10_000

func newNonceStore(ttl time.Duration) *nonceStore {
	return &nonceStore{ttl: ttl, m: map[string]time.Time{}}
}

// New returns a fresh nonce, dropping expired ones.
func (s *nonceStore) New() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	n := hex.EncodeToString(b[:])
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, t := range s.m {
		if now.Sub(t) > s.ttl || len(s.m) >= maxNonces {
			delete(s.m, k)
		}
	}
	s.m[n] = now
	return n
}

// Take consumes a nonce, reporting whether it was live.
func (s *nonceStore) Take(n string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.m[n]
	delete(s.m, n)
	return ok && time.Since(t) <= s.ttl
}

// nowMS is the current time in unix milliseconds.
func nowMS() int64 { return time.Now().UnixMilli() }
