package clientapi

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"maunium.net/go/mautrix/id"

	"hearth/appservice"
	"hearth/clientapi/accounts"
	"hearth/httputil"
)

// Device is the authenticated requester: the account and device an access token
// belongs to. Handlers of authenticated endpoints receive it, and it is in the
// request context (DeviceFromContext) for code further down.
type Device struct {
	UserID    id.UserID
	Localpart string
	DeviceID  id.DeviceID
	IsGuest   bool
	IsAdmin   bool
	// AppService is set when an application service's as_token authenticated
	// the request (UserID is then its sender or the ?user_id= it acts as, and
	// DeviceID empty unless ?device_id= named one).
	AppService *appservice.AppService
	// tokenHash is the hash of the access token used.
	tokenHash accounts.TokenHash
}

type deviceKey struct{}

// DeviceFromContext returns the authenticated device of a request handled by
// an authenticated endpoint, or nil.
func DeviceFromContext(ctx context.Context) *Device {
	d, _ := ctx.Value(deviceKey{}).(*Device)
	return d
}

// authFlags adjust what an authenticated endpoint accepts.
type authFlags uint8

const (
	// allowGuests lets guest accounts use the endpoint (Client-Server API,
	// "Guest Access": only the endpoints listed there).
	allowGuests authFlags = 1 << iota
	// adminOnly restricts the endpoint to server admins.
	adminOnly
)

// accessToken extracts the access token: "Authorization: Bearer" first, then the
// access_token query parameter (Client-Server API, "Using access tokens").
func accessToken(r *http.Request) (string, bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			tok = strings.TrimSpace(tok)
			return tok, tok != ""
		}
		return "", false
	}
	tok := r.URL.Query().Get("access_token")
	return tok, tok != ""
}

// authed adapts a handler that needs an access token.
func (a *API) authed(h authedFunc, flags authFlags) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		d, err := a.authenticate(r)
		if err == nil {
			switch {
			case d.IsGuest && flags&allowGuests == 0:
				err = httputil.GuestAccessForb("Guest accounts cannot use this endpoint")
			case flags&adminOnly != 0 && !d.IsAdmin:
				err = httputil.Forbidden("You are not a server admin")
			}
		}
		if err == nil && d.AppService != nil {
			r, err = appServiceTS(r)
		}
		if err == nil {
			r = r.WithContext(context.WithValue(r.Context(), deviceKey{}, d))
			err = h(w, r, d)
		}
		if err != nil {
			respondErr(w, r, err)
		}
	}
}

// Authenticate resolves a request's access token to its device. It returns
// M_MISSING_TOKEN, or M_UNKNOWN_TOKEN (with soft_logout for expired tokens).
func (a *API) Authenticate(r *http.Request) (*Device, error) { return a.authenticate(r) }

func (a *API) authenticate(r *http.Request) (*Device, error) {
	tok, ok := accessToken(r)
	if !ok {
		return nil, httputil.MissingToken("Missing access token")
	}
	if as := a.opts.AppServices.ByToken(tok); as != nil {
		return a.appServiceDevice(r, as)
	}
	h := accounts.HashToken(tok)
	ctx := r.Context()
	ct, err := a.tokens.get(ctx, h, a.accounts)
	if errors.Is(err, accounts.ErrUnknownToken) {
		return nil, httputil.UnknownToken("Unknown access token").With("soft_logout", false)
	}
	if err != nil {
		return nil, internalErr(err)
	}
	now := time.Now().UnixMilli()
	if ct.expiresTS != 0 && now >= ct.expiresTS {
		// Client-Server API, "Refreshing access tokens": an expired token gets
		// M_UNKNOWN_TOKEN, "preferably with soft_logout: true".
		return nil, httputil.UnknownToken("Access token has expired").With("soft_logout", true)
	}
	if ct.prevRefresh.Load() && ct.prevRefresh.CompareAndSwap(true, false) {
		logIfErr(ctx, "revoking replaced refresh token", a.accounts.ConfirmRefresh(ctx, h))
	}
	if last := ct.lastTouch.Load(); now-last > lastSeenInterval.Milliseconds() && ct.lastTouch.CompareAndSwap(last, now) {
		logIfErr(ctx, "recording device last seen", a.accounts.TouchDevice(ctx, ct.dev.Localpart, string(ct.dev.DeviceID), clientIP(r), now))
	}
	d := ct.dev
	return &d, nil
}

// lastSeenInterval is how often a device's last-seen time and address are
// written: at most once per interval per token, not on every request.
const lastSeenInterval = 5 * time.Minute

// clientIP is the address rate limits and device last-seen records use: the
// connection's peer, or, when the peer is a proxy on the loopback interface, the
// last address it appended to X-Forwarded-For.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
			if i := strings.LastIndexByte(xff, ','); i >= 0 {
				xff = xff[i+1:]
			}
			if fwd := strings.TrimSpace(xff); net.ParseIP(fwd) != nil {
				return fwd
			}
		}
	}
	return host
}

// tokenCache keeps resolved access tokens in memory so that most requests cost
// one hash and one map lookup. Entries live for ttl (bounding how stale a token
// revoked by another process can be here) and are dropped at once when this
// process revokes them.
type tokenCache struct {
	ttl time.Duration
	max int

	mu     sync.RWMutex
	byHash map[accounts.TokenHash]*cachedToken
	byUser map[string]map[accounts.TokenHash]struct{}
}

type cachedToken struct {
	dev       Device
	expiresTS int64
	fetched   time.Time
	// prevRefresh is set until the first use confirms a refresh.
	prevRefresh atomic.Bool
	// lastTouch is when the device's last-seen record was last written (unix ms).
	lastTouch atomic.Int64
}

func newTokenCache(max int, ttl time.Duration) *tokenCache {
	return &tokenCache{
		ttl: ttl, max: max,
		byHash: make(map[accounts.TokenHash]*cachedToken),
		byUser: make(map[string]map[accounts.TokenHash]struct{}),
	}
}

// get returns the token's entry, loading it from the store on a miss.
func (c *tokenCache) get(ctx context.Context, h accounts.TokenHash, store *accounts.Store) (*cachedToken, error) {
	c.mu.RLock()
	ct, ok := c.byHash[h]
	c.mu.RUnlock()
	if ok && time.Since(ct.fetched) < c.ttl {
		return ct, nil
	}
	ti, err := store.LookupAccessToken(ctx, h)
	if err != nil {
		if ok {
			c.remove(h, ct.dev.Localpart)
		}
		return nil, err
	}
	n := &cachedToken{
		dev: Device{
			UserID:    id.UserID(store.UserID(ti.Localpart)),
			Localpart: ti.Localpart,
			DeviceID:  id.DeviceID(ti.DeviceID),
			IsGuest:   ti.IsGuest,
			IsAdmin:   ti.IsAdmin,
			tokenHash: h,
		},
		expiresTS: ti.ExpiresTS,
		fetched:   time.Now(),
	}
	n.prevRefresh.Store(ti.HasPrevRefresh)
	if ok {
		n.lastTouch.Store(ct.lastTouch.Load())
	}
	c.put(h, n)
	return n, nil
}

func (c *tokenCache) put(h accounts.TokenHash, ct *cachedToken) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.byHash) >= c.max {
		// Drop an arbitrary tenth: map iteration order is random.
		n := c.max / 10
		for k, v := range c.byHash {
			c.removeLocked(k, v.dev.Localpart)
			if n--; n <= 0 {
				break
			}
		}
	}
	c.byHash[h] = ct
	u := c.byUser[ct.dev.Localpart]
	if u == nil {
		u = make(map[accounts.TokenHash]struct{})
		c.byUser[ct.dev.Localpart] = u
	}
	u[h] = struct{}{}
}

func (c *tokenCache) remove(h accounts.TokenHash, localpart string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removeLocked(h, localpart)
}

func (c *tokenCache) removeLocked(h accounts.TokenHash, localpart string) {
	delete(c.byHash, h)
	if u := c.byUser[localpart]; u != nil {
		delete(u, h)
		if len(u) == 0 {
			delete(c.byUser, localpart)
		}
	}
}

// invalidate drops the cached tokens of the given devices of a user, or all of
// the user's tokens when deviceIDs is nil.
func (c *tokenCache) invalidate(localpart string, deviceIDs []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for h := range c.byUser[localpart] {
		ct := c.byHash[h]
		if deviceIDs == nil || ct == nil || containsString(deviceIDs, string(ct.dev.DeviceID)) {
			c.removeLocked(h, localpart)
		}
	}
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
