package clientapi

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"maunium.net/go/mautrix/id"

	"hearth/appservice"
	"hearth/clientapi/accounts"
	"hearth/httputil"
	"hearth/roomserver"
)

// Application services in the client-server API (Application Service API,
// "Client-Server API Extensions"): identity assertion with the as_token and
// ?user_id= / ?device_id=, timestamp massaging with ?ts=, registration and
// login with m.login.application_service, and the ping endpoint. The services
// themselves, their namespaces and the transaction sender are in package
// appservice.

// appServiceLoginType is the login and registration type of application services.
const appServiceLoginType = "m.login.application_service"

func (a *API) registerAppServiceRoutes(r *mux.Router) {
	handle(r, v1Only, "/appservice/{appserviceId}/ping", a.authed(a.pingAppService, 0), http.MethodPost)
}

// requestAppService is the application service whose as_token the request
// carries, or nil.
func (a *API) requestAppService(r *http.Request) *appservice.AppService {
	if a.opts.AppServices == nil {
		return nil
	}
	tok, ok := accessToken(r)
	if !ok {
		return nil
	}
	return a.opts.AppServices.ByToken(tok)
}

// appServiceDevice authenticates a request made with as's as_token (Application
// Service API, "Identity assertion"): the service acts as its sender, or as the
// user in ?user_id=, which must be in its user namespace and registered; with
// ?device_id= (or MSC3202's unstable org.matrix.msc3202.device_id) as that
// device of the user, which must exist; without, as no device.
func (a *API) appServiceDevice(r *http.Request, as *appservice.AppService) (*Device, error) {
	if addr, err := netip.ParseAddr(clientIP(r)); err != nil || !as.AllowsAddr(addr) {
		// Outside the service's ip_range_whitelist the token is just unknown.
		return nil, httputil.UnknownToken("Unknown access token").With("soft_logout", false)
	}
	ctx := r.Context()
	q := r.URL.Query()
	userID := as.Sender()
	if q.Has("user_id") {
		userID = id.UserID(q.Get("user_id"))
	}
	d := &Device{UserID: userID, AppService: as}
	if userID != as.Sender() {
		if !as.UserInNamespace(userID) {
			return nil, httputil.Forbidden("Application service cannot masquerade as %s: not in its user namespace", userID)
		}
		acct, err := a.appServiceUsers.get(ctx, a.accounts, userID.Localpart())
		if accounts.IsNotFound(err) {
			return nil, httputil.Forbidden("Application service has not registered %s", userID)
		}
		if err != nil {
			return nil, internalErr(err)
		}
		if acct.Deactivated {
			return nil, httputil.UserDeactivated("%s has been deactivated", userID)
		}
		d.IsAdmin = acct.IsAdmin
	}
	d.Localpart = userID.Localpart()
	dev := q.Get("device_id")
	if dev == "" {
		dev = q.Get("org.matrix.msc3202.device_id")
	}
	if dev != "" {
		if _, err := a.accounts.Device(ctx, d.Localpart, dev); errors.Is(err, accounts.ErrNotFound) {
			return nil, &httputil.Error{Status: http.StatusBadRequest, ErrCode: "M_UNKNOWN_DEVICE",
				Message: "Device " + dev + " of " + string(userID) + " does not exist"}
		} else if err != nil {
			return nil, internalErr(err)
		}
		d.DeviceID = id.DeviceID(dev)
	}
	return d, nil
}

// maxOriginServerTS is the largest origin_server_ts canonical JSON can carry.
const maxOriginServerTS = 1<<53 - 1

// appServiceTS applies ?ts= of an application service's request to PUT
// /rooms/{roomId}/send/… or PUT /rooms/{roomId}/state/… (Application Service
// API, "Timestamp massaging"): the event gets that origin_server_ts. Other
// endpoints ignore ts, as the spec lists only these two.
func appServiceTS(r *http.Request) (*http.Request, error) {
	if r.Method != http.MethodPut || !strings.Contains(r.URL.RawQuery, "ts=") {
		return r, nil
	}
	q := r.URL.Query()
	if !q.Has("ts") {
		return r, nil
	}
	route := mux.CurrentRoute(r)
	if route == nil {
		return r, nil
	}
	tmpl, err := route.GetPathTemplate()
	if err != nil || !(strings.Contains(tmpl, "/rooms/{roomId}/send/") || strings.Contains(tmpl, "/rooms/{roomId}/state/")) {
		return r, nil
	}
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil || ts < 1 || ts > maxOriginServerTS {
		return nil, httputil.InvalidParam("ts must be a timestamp in milliseconds since the epoch")
	}
	return r.WithContext(roomserver.WithOriginServerTS(r.Context(), ts)), nil
}

// checkNotExclusive refuses a user ID that an application service claims
// exclusively (Application Service API, "Server admin style permissions":
// M_EXCLUSIVE), unless that service is the one asking.
func (a *API) checkNotExclusive(userID id.UserID, asking *appservice.AppService) error {
	for _, as := range a.opts.AppServices.All() {
		if as != asking && as.IsExclusiveUser(userID) {
			return httputil.Exclusive("%s is reserved by an application service", userID)
		}
	}
	return nil
}

// checkAliasNamespace applies the application services' alias namespaces to a
// change of a local alias by d (Application Service API, "Server admin style
// permissions"): a service may only create or delete aliases in its namespace,
// and needs no other permission for those (byService); nobody else may touch an
// alias a service claims exclusively. Both are refused with M_EXCLUSIVE.
func (a *API) checkAliasNamespace(d *Device, alias id.RoomAlias) (byService bool, err error) {
	if as := d.AppService; as != nil {
		if !as.AliasInNamespace(alias) {
			return false, httputil.Exclusive("%s is not in the application service's alias namespace", alias)
		}
		return true, nil
	}
	if a.opts.AppServices.ExclusiveAliasOwner(alias) != nil {
		return false, httputil.Exclusive("%s is reserved by an application service", alias)
	}
	return false, nil
}

// registerAppService is POST /register with type m.login.application_service:
// the service creates a user in its namespace, without password or UIA. It logs
// the user in unless inhibit_login is set (this server has the legacy login
// API, so it may).
func (a *API) registerAppService(w http.ResponseWriter, r *http.Request, as *appservice.AppService, req *registerRequest) error {
	if as == nil {
		if _, ok := accessToken(r); !ok {
			return httputil.MissingToken("Registering with %s needs the application service's as_token", appServiceLoginType)
		}
		return httputil.UnknownToken("Unknown application service token").With("soft_logout", false)
	}
	if req.Username == nil || *req.Username == "" {
		return httputil.MissingParam("Missing username")
	}
	// No lower-casing: services choose their users' IDs exactly (as in Synapse).
	lp := *req.Username
	if err := a.accounts.ValidateLocalpart(lp); err != nil {
		return httputil.InvalidUsername("%s", strings.TrimPrefix(err.Error(), accounts.ErrInvalidUsername.Error()+": "))
	}
	userID := a.userID(lp)
	if !as.IsInterestedInUser(userID) {
		return httputil.Exclusive("%s is not in the application service's user namespace", userID)
	}
	if a.cfg.IsReservedLocalpart(lp) {
		return httputil.Exclusive("%s is reserved", userID)
	}
	if err := a.checkNotExclusive(userID, as); err != nil {
		return err
	}
	if err := validateDeviceFields(req.DeviceID, req.InitialDeviceDisplayName); err != nil {
		return err
	}
	ctx := r.Context()
	if err := a.accounts.CreateAccount(ctx, accounts.NewAccount{Localpart: lp}); err != nil {
		return accountErr(err)
	}
	resp := map[string]any{"user_id": userID, "home_server": a.cfg.ServerName}
	if !req.InhibitLogin {
		deviceID := ""
		if req.DeviceID != nil {
			deviceID = *req.DeviceID
		}
		var err error
		if resp, err = a.issueLogin(ctx, r, lp, deviceID, req.InitialDeviceDisplayName, req.RefreshToken); err != nil {
			return err
		}
	}
	httputil.RespondJSON(w, http.StatusOK, resp)
	return nil
}

// appServiceLogin resolves POST /login with type m.login.application_service:
// the request carries the service's as_token and names a user of its namespace
// (identifier of type m.id.user). It returns the localpart to log in.
func (a *API) appServiceLogin(ctx context.Context, r *http.Request, req *loginRequest) (string, error) {
	as := a.requestAppService(r)
	if as == nil {
		if _, ok := accessToken(r); !ok {
			return "", httputil.MissingToken("Logging in with %s needs the application service's as_token", appServiceLoginType)
		}
		return "", httputil.UnknownToken("Unknown application service token").With("soft_logout", false)
	}
	user := req.User
	if len(req.Identifier) > 0 {
		ident, err := parseIdentifier(req)
		if err != nil {
			return "", err
		}
		if ident.Type != "m.id.user" {
			return "", httputil.InvalidParam("Application services log in with identifiers of type m.id.user")
		}
		user = ident.User
	}
	if user == "" {
		return "", httputil.MissingParam("Missing user identifier")
	}
	userID := id.UserID(user)
	if !strings.HasPrefix(user, "@") {
		userID = a.userID(user)
	}
	if !as.IsInterestedInUser(userID) {
		return "", httputil.Exclusive("%s is not in the application service's user namespace", userID)
	}
	lp := userID.Localpart()
	acct, err := a.accounts.Get(ctx, lp)
	if accounts.IsNotFound(err) {
		return "", httputil.Forbidden("%s has not been registered", userID)
	}
	if err != nil {
		return "", internalErr(err)
	}
	if acct.Deactivated {
		return "", httputil.UserDeactivated("This account has been deactivated")
	}
	return lp, nil
}

// POST /_matrix/client/v1/appservice/{appserviceId}/ping
func (a *API) pingAppService(w http.ResponseWriter, r *http.Request, d *Device) error {
	as := d.AppService
	if as == nil || as.ID != mux.Vars(r)["appserviceId"] {
		return httputil.Forbidden("The access token is not the application service's")
	}
	var req struct {
		TransactionID *string `json:"transaction_id"`
	}
	if err := decodeOptionalJSON(r, &req); err != nil {
		return err
	}
	took, err := a.opts.AppServices.Ping(r.Context(), as, req.TransactionID)
	var se *appservice.StatusError
	switch {
	case err == nil:
		httputil.RespondJSON(w, http.StatusOK, map[string]int64{"duration_ms": took.Milliseconds()})
		return nil
	case errors.Is(err, appservice.ErrNoURL):
		return &httputil.Error{Status: http.StatusBadRequest, ErrCode: "M_URL_NOT_SET", Message: "The application service has no URL"}
	case errors.As(err, &se):
		return (&httputil.Error{Status: http.StatusBadGateway, ErrCode: "M_BAD_STATUS", Message: "The application service answered with an error"}).
			With("status", se.Status).With("body", se.Body)
	case errors.Is(err, context.DeadlineExceeded):
		return &httputil.Error{Status: http.StatusGatewayTimeout, ErrCode: "M_CONNECTION_TIMEOUT", Message: "The application service did not answer in time"}
	default:
		return &httputil.Error{Status: http.StatusBadGateway, ErrCode: "M_CONNECTION_FAILED", Message: "Could not reach the application service"}
	}
}

// LocalAliasesOfRoom lists the local aliases pointing to roomID (for the
// application service sender: an alias in a service's namespace makes the room
// interesting to it).
func (a *API) LocalAliasesOfRoom(ctx context.Context, roomID id.RoomID) ([]id.RoomAlias, error) {
	rows, err := a.db.Query(ctx, `SELECT alias FROM room_aliases WHERE room_id = $1`, string(roomID))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []id.RoomAlias
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, id.RoomAlias(s))
	}
	return out, rows.Err()
}

var _ appservice.RoomAliases = (*API)(nil)

// queryAppServiceAlias asks the application services about a local alias this
// server does not hold; a service that knows it creates it before answering.
func (a *API) queryAppServiceAlias(ctx context.Context, alias id.RoomAlias) bool {
	return a.opts.AppServices != nil && a.opts.AppServices.QueryAlias(ctx, alias)
}

// queryAppServiceUser asks the application services about a local user that
// does not exist; a service that knows it registers it before answering.
func (a *API) queryAppServiceUser(ctx context.Context, userID id.UserID) bool {
	return a.opts.AppServices != nil && a.opts.AppServices.QueryUser(ctx, userID)
}

// appServiceUserCache remembers, for a short while, the accounts application
// services act as, so that a bridge's stream of requests does not read the
// account on every one. The zero value is ready to use.
type appServiceUserCache struct {
	mu sync.RWMutex
	m  map[string]cachedASUser
}

type cachedASUser struct {
	acct    accounts.Account
	fetched time.Time
}

const (
	appServiceUserTTL     = time.Minute
	maxAppServiceUserSize = 50_000
)

// get returns the account of localpart, from the cache when fresh. Missing
// accounts are not cached: the service may register them any moment.
func (c *appServiceUserCache) get(ctx context.Context, store *accounts.Store, localpart string) (*accounts.Account, error) {
	c.mu.RLock()
	e, ok := c.m[localpart]
	c.mu.RUnlock()
	if ok && time.Since(e.fetched) < appServiceUserTTL {
		return &e.acct, nil
	}
	acct, err := store.Get(ctx, localpart)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[string]cachedASUser)
	}
	if len(c.m) >= maxAppServiceUserSize {
		n := maxAppServiceUserSize / 10
		for k := range c.m {
			delete(c.m, k)
			if n--; n <= 0 {
				break
			}
		}
	}
	c.m[localpart] = cachedASUser{acct: *acct, fetched: time.Now()}
	c.mu.Unlock()
	return acct, nil
}
