// Package federationapi is Hearth's server-server API: the key server and notary,
// the key ring that finds other servers' signing keys, X-Matrix request signing
// and verification, server discovery over TLS with an SSRF guard, the inbound
// endpoints (/send with the checks on received PDUs, joins, leaves, invites,
// state, backfill …), the outbound per-destination queues, and joining rooms that
// live on other servers.
//
// It reads and writes rooms only through the room engine (roomserver), and owns
// only its own tables (keys, queues, received transactions, invites).
package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/httputil"
	"hearth/internal/version"
	"hearth/roomserver"
	"hearth/storage"
)

// ErrNotFound is what providers return for an unknown user, alias or room.
var ErrNotFound = errors.New("not found")

// ProfileProvider answers profile queries about local users (GET
// /_matrix/federation/v1/query/profile). The client API implements it.
type ProfileProvider interface {
	// LocalProfile returns the profile fields of a local user (displayname,
	// avatar_url, …), or ErrNotFound.
	LocalProfile(ctx context.Context, userID id.UserID) (map[string]json.RawMessage, error)
}

// DirectoryProvider resolves this server's room aliases (GET
// /_matrix/federation/v1/query/directory, and remote joins by a local alias).
type DirectoryProvider interface {
	// ResolveLocalAlias returns the room of a local alias, or ErrNotFound.
	ResolveLocalAlias(ctx context.Context, alias id.RoomAlias) (id.RoomID, error)
}

// EDUHandler consumes EDUs of one type received in /send transactions (typing,
// receipts, presence, to-device messages, device list updates …). The components
// owning those features register one with RegisterEDUHandler.
type EDUHandler interface {
	// HandleEDU is called with the authenticated origin server and the EDU's
	// content. Errors are logged; EDUs are not retried.
	HandleEDU(ctx context.Context, origin string, eduType string, content json.RawMessage) error
}

// EDUHandlerFunc adapts a function to EDUHandler.
type EDUHandlerFunc func(ctx context.Context, origin, eduType string, content json.RawMessage) error

// HandleEDU implements EDUHandler.
func (f EDUHandlerFunc) HandleEDU(ctx context.Context, origin, eduType string, content json.RawMessage) error {
	return f(ctx, origin, eduType, content)
}

// Options are the federation API's collaborators; each may be nil.
type Options struct {
	Profiles  ProfileProvider
	Directory DirectoryProvider
	// Invites refuses invites local users block (nil: all are accepted).
	Invites InvitePolicy
}

// API is the server-server API component.
type API struct {
	cfg        *config.Config
	serverName string
	key        *config.SigningKey
	rs         *roomserver.Roomserver
	store      *store
	client     *federation.Client
	transport  *transport
	keyRing    *KeyRing
	own        *ownKeys
	sender     *sender
	opts       Options

	edusMu sync.RWMutex
	edus   map[string][]EDUHandler

	invitesMu       sync.RWMutex
	inviteListeners []func(Invite)
	leaveListeners  []func(RemoteLeave)

	dir atomic.Pointer[DirectoryProvider]

	// keys is the E2EE module, set by EnableE2EE; ephemeral the /sync
	// ephemeral streams, set by EnableEphemeral.
	keys      E2EEKeys
	ephemeral EphemeralSink
	// devLists refreshes remote users' cached device lists (devicelist.go).
	devLists deviceListResyncer

	// originLocks serialises /send transactions per origin.
	originLocks keyedMutex
	// joins are the remote joins in flight, which received events wait for.
	joins joinsInFlight
	acls  aclCache
}

// New creates the federation API. Start begins sending; Register adds the routes.
func New(cfg *config.Config, db *storage.DB, key *config.SigningKey, rs *roomserver.Roomserver, opts Options) (*API, error) {
	tr, hc, err := newTransport(&cfg.Federation, cfg.Resolve)
	if err != nil {
		return nil, fmt.Errorf("setting up federation client: %w", err)
	}
	st := &store{db: db}
	client := newMautrixClient(cfg.ServerName, key, hc)
	a := &API{
		cfg: cfg, serverName: cfg.ServerName, key: key, rs: rs, store: st,
		client: client, transport: tr, opts: opts,
		keyRing: newKeyRing(cfg.ServerName, key, client, st, cfg.Federation.KeyNotaries),
		own:     &ownKeys{serverName: cfg.ServerName, key: key, now: time.Now},
		edus:    make(map[string][]EDUHandler),
	}
	a.sender = newSender(a)
	if opts.Directory != nil {
		a.SetDirectory(opts.Directory)
	}
	// The auth rules check restricted-join and third-party-invite signatures of
	// remote servers through the key ring.
	rs.SetKeyFetcher(a.keyRing.GetKeyFunc())
	return a, nil
}

// SetDirectory sets the provider of local room aliases (for components created
// after the federation API).
func (a *API) SetDirectory(d DirectoryProvider) { a.dir.Store(&d) }

func (a *API) directory() DirectoryProvider {
	if d := a.dir.Load(); d != nil {
		return *d
	}
	return nil
}

// KeyRing is the API's key ring.
func (a *API) KeyRing() *KeyRing { return a.keyRing }

// RegisterEDUHandler adds h for EDUs of eduType (several handlers may share one).
func (a *API) RegisterEDUHandler(eduType string, h EDUHandler) {
	a.edusMu.Lock()
	a.edus[eduType] = append(a.edus[eduType], h)
	a.edusMu.Unlock()
}

func (a *API) eduHandlers(eduType string) []EDUHandler {
	a.edusMu.RLock()
	defer a.edusMu.RUnlock()
	return a.edus[eduType]
}

// Start begins sending queued and new events to other servers, until ctx ends or
// Stop is called.
func (a *API) Start(ctx context.Context) error { return a.sender.start(ctx) }

// Stop stops the sender and waits for in-flight transactions to end.
func (a *API) Stop() { a.sender.stop() }

// Register adds the federation and key routes.
func (a *API) Register(r httputil.Routers) {
	k := r.Key
	k.HandleFunc("/v2/server", public(a.getServerKeys)).Methods(http.MethodGet)
	k.HandleFunc("/v2/query/{serverName}", public(a.getQueryKeys)).Methods(http.MethodGet)
	k.HandleFunc("/v2/query", public(a.postQueryKeys)).Methods(http.MethodPost)

	f := r.Federation
	f.HandleFunc("/v1/version", public(a.getVersion)).Methods(http.MethodGet)
	f.HandleFunc("/v1/send/{txnId}", a.authed(a.putSend)).Methods(http.MethodPut)
	f.HandleFunc("/v1/make_join/{roomId}/{userId}", a.authed(a.getMakeJoin)).Methods(http.MethodGet)
	f.HandleFunc("/v2/send_join/{roomId}/{eventId}", a.authed(a.putSendJoin)).Methods(http.MethodPut)
	f.HandleFunc("/v1/send_join/{roomId}/{eventId}", a.authed(a.putSendJoinV1)).Methods(http.MethodPut)
	f.HandleFunc("/v1/make_leave/{roomId}/{userId}", a.authed(a.getMakeLeave)).Methods(http.MethodGet)
	f.HandleFunc("/v2/send_leave/{roomId}/{eventId}", a.authed(a.putSendLeave)).Methods(http.MethodPut)
	f.HandleFunc("/v1/send_leave/{roomId}/{eventId}", a.authed(a.putSendLeaveV1)).Methods(http.MethodPut)
	f.HandleFunc("/v1/make_knock/{roomId}/{userId}", a.authed(a.getMakeKnock)).Methods(http.MethodGet)
	f.HandleFunc("/v1/send_knock/{roomId}/{eventId}", a.authed(a.putSendKnock)).Methods(http.MethodPut)
	f.HandleFunc("/v2/invite/{roomId}/{eventId}", a.authed(a.putInvite)).Methods(http.MethodPut)
	f.HandleFunc("/v1/state/{roomId}", a.authed(a.getState)).Methods(http.MethodGet)
	f.HandleFunc("/v1/state_ids/{roomId}", a.authed(a.getStateIDs)).Methods(http.MethodGet)
	f.HandleFunc("/v1/event/{eventId}", a.authed(a.getEvent)).Methods(http.MethodGet)
	f.HandleFunc("/v1/event_auth/{roomId}/{eventId}", a.authed(a.getEventAuth)).Methods(http.MethodGet)
	f.HandleFunc("/v1/backfill/{roomId}", a.authed(a.getBackfill)).Methods(http.MethodGet)
	f.HandleFunc("/v1/get_missing_events/{roomId}", a.authed(a.postGetMissingEvents)).Methods(http.MethodPost)
	f.HandleFunc("/v1/timestamp_to_event/{roomId}", a.authed(a.getTimestampToEvent)).Methods(http.MethodGet)
	f.HandleFunc("/v1/query/profile", a.authed(a.getQueryProfile)).Methods(http.MethodGet)
	f.HandleFunc("/v1/query/directory", a.authed(a.getQueryDirectory)).Methods(http.MethodGet)
	f.HandleFunc("/v1/hierarchy/{roomId}", a.authed(a.getHierarchy)).Methods(http.MethodGet)
}

// GET /_matrix/federation/v1/version
func (a *API) getVersion(w http.ResponseWriter, r *http.Request) error {
	httputil.RespondJSON(w, http.StatusOK, map[string]any{"server": map[string]string{"name": "Hearth", "version": version.Version}})
	return nil
}

// keyedMutex is a set of mutexes by key, created on demand and dropped when free.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) func() {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = make(map[string]*keyedEntry)
	}
	e := k.locks[key]
	if e == nil {
		e = &keyedEntry{}
		k.locks[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}
