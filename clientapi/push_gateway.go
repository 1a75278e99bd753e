package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"hearth/clientapi/accounts"
	"hearth/clientapi/pushrules"
	"hearth/roomserver/events"
)

// Push delivery (Client-Server API, "Push Notifications"; Push Gateway API,
// POST /_matrix/push/v1/notify). The notification worker (sync_counts.go)
// evaluates each event's push rules once per local member; when an event
// notifies a user who has pushers, it hands the event here. A few workers post
// it to each of the user's http pushers' gateways, retrying transient failures
// a few times, and remove pushers whose pushkey the gateway rejects. The queue
// is bounded: when gateways are too slow to keep up, notifications are dropped
// (and counted in the log) rather than held without limit. Badge counts alone
// (after a read receipt) are not sent.

// Push delivery tuning.
const (
	pushWorkers       = 4
	pushQueueSize     = 4096
	pushAttempts      = 3
	pushRetryBase     = 2 * time.Second
	pushRequestTO     = 15 * time.Second
	pushMaxRespBody   = 64 << 10
	pushCountSettleTO = time.Second
)

// pushSender delivers notifications to push gateways.
type pushSender struct {
	a      *API
	client *http.Client
	// retryBase is the wait before the first retry (pushRetryBase).
	retryBase time.Duration
	// gateways remembers the gateways that are down.
	gateways gatewayHealth

	mu     sync.RWMutex
	users  map[string]struct{} // localparts with at least one pusher
	loaded bool

	startOnce sync.Once
	jobs      chan pushJob
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	dropped   atomic.Int64
}

// pushJob is one event to push to one user.
type pushJob struct {
	user    id.UserID
	ev      *events.Event
	actions []pushrules.Action
}

func newPushSender(a *API) *pushSender {
	ctx, cancel := context.WithCancel(context.Background())
	return &pushSender{
		a:         a,
		client:    newPushClient(a.cfg.Federation.AllowedCIDRs, a.cfg.Federation.DeniedCIDRs),
		retryBase: pushRetryBase,
		users:     map[string]struct{}{},
		jobs:      make(chan pushJob, pushQueueSize),
		ctx:       ctx,
		cancel:    cancel,
	}
}

// close stops delivery (API.Close); queued notifications are dropped. It may
// be called more than once.
func (p *pushSender) close() {
	p.cancel()
	p.wg.Wait()
}

// ensureLoaded reads which users have pushers, once.
func (p *pushSender) ensureLoaded() bool {
	p.mu.RLock()
	loaded := p.loaded
	p.mu.RUnlock()
	if loaded {
		return true
	}
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	lps, err := p.a.accounts.UsersWithPushers(ctx)
	if err != nil {
		slog.Error("loading users with pushers", "err", err)
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, lp := range lps {
		p.users[lp] = struct{}{}
	}
	p.loaded = true
	return true
}

// has reports whether the user has (or recently had) a pusher.
func (p *pushSender) has(localpart string) bool {
	if !p.ensureLoaded() {
		return false
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	_, ok := p.users[localpart]
	return ok
}

// addUser records that the user has a pusher.
func (p *pushSender) addUser(localpart string) {
	p.mu.Lock()
	p.users[localpart] = struct{}{}
	p.mu.Unlock()
}

// refreshUser re-reads whether the user still has pushers (after a deletion).
func (p *pushSender) refreshUser(ctx context.Context, localpart string) {
	ps, err := p.a.accounts.Pushers(ctx, localpart)
	if err != nil {
		slog.ErrorContext(ctx, "reading pushers", "user", localpart, "err", err)
		return
	}
	p.mu.Lock()
	if len(ps) == 0 {
		delete(p.users, localpart)
	} else {
		p.users[localpart] = struct{}{}
	}
	p.mu.Unlock()
}

// notify queues an event that notifies userID (a local user), if they have
// pushers. It is called by the notification worker and never blocks.
func (p *pushSender) notify(userID id.UserID, ev *events.Event, res *pushrules.Result) {
	if p == nil || res == nil || !res.Notify || p.ctx.Err() != nil {
		return
	}
	lp, _, err := userID.Parse()
	if err != nil || !p.has(lp) {
		return
	}
	p.startOnce.Do(p.start)
	select {
	case p.jobs <- pushJob{user: userID, ev: ev, actions: res.Actions}:
	default:
		if n := p.dropped.Add(1); n == 1 || n%1000 == 0 {
			slog.Warn("push queue full: notifications dropped", "dropped_total", n)
		}
	}
}

func (p *pushSender) start() {
	p.wg.Add(pushWorkers)
	for range pushWorkers {
		go func() {
			defer p.wg.Done()
			for {
				select {
				case <-p.ctx.Done():
					return
				case j := <-p.jobs:
					p.deliver(j)
				}
			}
		}()
	}
}

// deliver pushes one event to each of the user's http pushers.
func (p *pushSender) deliver(j pushJob) {
	defer func() {
		if r := recover(); r != nil {
			slog.Error("push delivery panicked", "panic", fmt.Sprint(r))
		}
	}()
	ctx := p.ctx
	lp, _, _ := j.user.Parse()
	pushers, err := p.a.accounts.Pushers(ctx, lp)
	if err != nil {
		slog.Error("reading pushers", "user", j.user, "err", err)
		return
	}
	pushers = slices.DeleteFunc(pushers, func(x accounts.Pusher) bool { return x.Kind != "http" })
	if len(pushers) == 0 {
		p.refreshUser(ctx, lp)
		return
	}
	n := p.buildNotification(ctx, j)
	for i := range pushers {
		pu := &pushers[i]
		body, url, err := n.forPusher(pu)
		if err != nil {
			slog.Warn("pusher has unusable data", "user", j.user, "app_id", pu.AppID, "err", err)
			continue
		}
		rejected, err := p.post(ctx, url, body)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, errGatewayDown) { // a down gateway was logged when it failed
				slog.Warn("push gateway failed", "user", j.user, "app_id", pu.AppID, "event_id", j.ev.ID(), "err", err)
			}
			continue
		}
		// "Homeservers must cease sending notification requests for these
		// pushkeys and remove the associated pushers."
		if slices.Contains(rejected, pu.PushKey) {
			if _, err := p.a.accounts.DeletePusher(ctx, lp, pu.AppID, pu.PushKey); err != nil {
				slog.Error("removing rejected pusher", "user", j.user, "app_id", pu.AppID, "err", err)
			} else {
				slog.Info("push gateway rejected pushkey: pusher removed", "user", j.user, "app_id", pu.AppID)
				p.refreshUser(ctx, lp)
			}
		}
	}
}

// notification is what is pushed about one event, before it is addressed to
// a pusher.
type notification struct {
	EventID           id.EventID      `json:"event_id"`
	RoomID            id.RoomID       `json:"room_id"`
	Type              string          `json:"type,omitempty"`
	Sender            id.UserID       `json:"sender,omitempty"`
	SenderDisplayName string          `json:"sender_display_name,omitempty"`
	RoomName          string          `json:"room_name,omitempty"`
	RoomAlias         string          `json:"room_alias,omitempty"`
	Membership        string          `json:"membership,omitempty"`
	UserIsTarget      *bool           `json:"user_is_target,omitempty"`
	Prio              string          `json:"prio"`
	Content           json.RawMessage `json:"content,omitempty"`
	Counts            map[string]int  `json:"counts"`
	Devices           []pushDevice    `json:"devices"`

	tweaks map[string]json.RawMessage
}

// pushDevice is one entry of devices.
type pushDevice struct {
	AppID     string                     `json:"app_id"`
	PushKey   string                     `json:"pushkey"`
	PushKeyTS int64                      `json:"pushkey_ts"`
	Data      map[string]json.RawMessage `json:"data"`
	Tweaks    map[string]json.RawMessage `json:"tweaks"`
}

// buildNotification gathers the event's details, the room's name and the
// user's unread count.
func (p *pushSender) buildNotification(ctx context.Context, j pushJob) *notification {
	ev := j.ev
	n := &notification{EventID: ev.ID(), RoomID: ev.RoomID(), Type: ev.Type(), Sender: ev.Sender(), Content: ev.Content(),
		tweaks: tweaksOf(j.actions), Counts: map[string]int{}}
	// Synapse's rule: encrypted events (whose contents the server cannot
	// judge) and events that sound or highlight are urgent, the rest not.
	n.Prio = "low"
	if ev.Type() == "m.room.encrypted" || truthy(n.tweaks["highlight"]) || truthy(n.tweaks["sound"]) {
		n.Prio = "high"
	}
	if sk := ev.StateKey(); sk != nil && ev.Type() == "m.room.member" {
		n.Membership = gjson.GetBytes(ev.Content(), "membership").Str
		target := *sk == string(j.user)
		n.UserIsTarget = &target
	}
	if rs := p.a.opts.Roomserver; rs != nil {
		state := func(typ, key, path string) string {
			e, err := rs.CurrentStateEvent(ctx, ev.RoomID(), typ, key)
			if err != nil || e == nil {
				return ""
			}
			return gjson.GetBytes(e.Content(), path).Str
		}
		n.SenderDisplayName = state("m.room.member", string(ev.Sender()), "displayname")
		n.RoomName = state("m.room.name", "", "name")
		n.RoomAlias = state("m.room.canonical_alias", "", "alias")
	}
	if unread := p.unreadCount(ctx, j.user); unread > 0 {
		// "Counts whose value is zero should be omitted."
		n.Counts["unread"] = unread
	}
	return n
}

// unreadCount is the user's number of unread notifications across all rooms,
// once the notification worker has written what it has counted so far.
func (p *pushSender) unreadCount(ctx context.Context, userID id.UserID) int {
	if s := p.a.opts.Sync; s != nil {
		s.Settle(pushCountSettleTO)
	}
	var n int
	if err := p.a.db.QueryRow(ctx, `SELECT COUNT(*) FROM sync_notifications WHERE user_id = $1`, string(userID)).Scan(&n); err != nil {
		slog.Warn("counting unread notifications for push", "user", userID, "err", err)
		return 0
	}
	return n
}

// forPusher addresses the notification to one pusher: its data minus url, the
// event's tweaks, and the event_id_only format when the pusher asks for it.
// It returns the request body and the gateway URL.
func (n *notification) forPusher(pu *accounts.Pusher) ([]byte, string, error) {
	var data map[string]json.RawMessage
	if err := json.Unmarshal(pu.Data, &data); err != nil {
		return nil, "", fmt.Errorf("decoding pusher data: %w", err)
	}
	var url, format string
	if json.Unmarshal(data["url"], &url) != nil || url == "" {
		return nil, "", errors.New("pusher data has no url")
	}
	_ = json.Unmarshal(data["format"], &format)
	delete(data, "url")
	dev := pushDevice{AppID: pu.AppID, PushKey: pu.PushKey, PushKeyTS: pu.PushKeyTS / 1000, Data: data, Tweaks: n.tweaks}
	if dev.Tweaks == nil {
		dev.Tweaks = map[string]json.RawMessage{}
	}
	var body any
	if format == "event_id_only" {
		// Push Gateway API: only the IDs, the counts and the devices.
		body = map[string]any{"notification": map[string]any{
			"event_id": n.EventID, "room_id": n.RoomID, "prio": n.Prio, "counts": n.Counts, "devices": []pushDevice{dev},
		}}
	} else {
		c := *n
		c.Devices = []pushDevice{dev}
		body = map[string]any{"notification": &c}
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, "", fmt.Errorf("encoding notification: %w", err)
	}
	return b, url, nil
}

// tweaksOf collects the set_tweak actions; a tweak without a value is true.
func tweaksOf(actions []pushrules.Action) map[string]json.RawMessage {
	var t map[string]json.RawMessage
	for _, a := range actions {
		name, value := a.Tweak()
		if name == "" {
			continue
		}
		if t == nil {
			t = map[string]json.RawMessage{}
		}
		if value == nil {
			value = json.RawMessage("true")
		}
		t[name] = value
	}
	return t
}

// truthy reports whether a tweak's value is set and not false or null.
func truthy(v json.RawMessage) bool {
	v = bytes.TrimSpace(v)
	return len(v) > 0 && !bytes.Equal(v, []byte("false")) && !bytes.Equal(v, []byte("null"))
}

// errPushPermanent marks gateway answers not worth retrying.
var errPushPermanent = errors.New("push gateway refused the notification")

// errGatewayDown is post's answer for a gateway in its backoff period.
var errGatewayDown = errors.New("push gateway failed recently; not tried until its backoff has passed")

// post sends one notification, retrying network errors, 429 and 5xx answers,
// and returns the rejected pushkeys. A gateway that still fails after the
// retries is not tried again until its backoff has passed (gatewayHealth):
// the few delivery workers are shared by all users, and a dead gateway
// would otherwise hold one for most of a minute per notification.
func (p *pushSender) post(ctx context.Context, url string, body []byte) ([]string, error) {
	if p.gateways.isDown(url, time.Now()) {
		return nil, errGatewayDown
	}
	rejected, err := p.postRetrying(ctx, url, body)
	switch {
	case err == nil:
		p.gateways.ok(url)
	case !errors.Is(err, errPushPermanent) && ctx.Err() == nil:
		p.gateways.failed(url, time.Now())
	}
	return rejected, err
}

func (p *pushSender) postRetrying(ctx context.Context, url string, body []byte) ([]string, error) {
	var err error
	for attempt := range pushAttempts {
		if attempt > 0 {
			t := time.NewTimer(p.retryBase << (2 * (attempt - 1)))
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
			}
		}
		var rejected []string
		rejected, err = p.postOnce(ctx, url, body)
		if err == nil {
			return rejected, nil
		}
		if errors.Is(err, errPushPermanent) || ctx.Err() != nil {
			return nil, err
		}
	}
	return nil, err
}

func (p *pushSender) postOnce(ctx context.Context, url string, body []byte) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, pushRequestTO)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errPushPermanent, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		if errors.Is(err, errPushAddressBlocked) {
			return nil, fmt.Errorf("%w: %v", errPushPermanent, err)
		}
		return nil, fmt.Errorf("posting to push gateway: %w", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, pushMaxRespBody))
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return nil, fmt.Errorf("push gateway answered %s", resp.Status)
	default:
		return nil, fmt.Errorf("%w: %s", errPushPermanent, resp.Status)
	}
	var r struct {
		Rejected []string `json:"rejected"`
	}
	_ = json.Unmarshal(raw, &r)
	return r.Rejected, nil
}

// Backoff of a failing push gateway: from gatewayBackoffMin, doubling with
// each further failure, up to gatewayBackoffMax. At most maxTrackedGateways
// are remembered.
const (
	gatewayBackoffMin  = 30 * time.Second
	gatewayBackoffMax  = 10 * time.Minute
	maxTrackedGateways = 10_000
)

// gatewayHealth remembers the push gateways (by host) whose notifications
// failed even after retries, and until when they are left alone. The zero
// value is ready to use.
type gatewayHealth struct {
	mu   sync.Mutex
	down map[string]gatewayDown
}

type gatewayDown struct {
	failures int
	until    time.Time
}

// gatewayKey is the gateway a pusher URL names: its host and port, lower
// case (several pushers, and any path or query, on one host are one gateway).
func gatewayKey(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return rawURL
	}
	return strings.ToLower(u.Host)
}

// isDown reports whether the gateway of rawURL is in its backoff period.
func (h *gatewayHealth) isDown(rawURL string, now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	d, ok := h.down[gatewayKey(rawURL)]
	return ok && now.Before(d.until)
}

// failed records a failure of the gateway of rawURL.
func (h *gatewayHealth) failed(rawURL string, now time.Time) {
	key := gatewayKey(rawURL)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down == nil {
		h.down = make(map[string]gatewayDown)
	}
	d, ok := h.down[key]
	if !ok && len(h.down) >= maxTrackedGateways {
		// Forget the gateways whose backoff has passed, else an arbitrary
		// tenth (map iteration order is random).
		for k, v := range h.down {
			if !now.Before(v.until) {
				delete(h.down, k)
			}
		}
		for k := range h.down {
			if len(h.down) < maxTrackedGateways*9/10 {
				break
			}
			delete(h.down, k)
		}
	}
	backoff := gatewayBackoffMax
	if d.failures < 16 {
		backoff = min(gatewayBackoffMin<<d.failures, gatewayBackoffMax)
	}
	h.down[key] = gatewayDown{failures: d.failures + 1, until: now.Add(backoff)}
}

// ok records that the gateway of rawURL answered.
func (h *gatewayHealth) ok(rawURL string) {
	key := gatewayKey(rawURL)
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.down, key)
}

// errPushAddressBlocked is returned when a gateway's address is one outbound
// requests may not reach.
var errPushAddressBlocked = errors.New("address not allowed for outbound requests")

// newPushClient returns the HTTP client for push gateways. Gateway URLs come
// from users, so connections are held to federation.allowed_cidrs /
// denied_cidrs (checked on the address actually dialled, so DNS tricks and
// redirects cannot reach a denied network), and redirects are not followed.
func newPushClient(allowedCIDRs, deniedCIDRs []string) *http.Client {
	parse := func(cidrs []string) []netip.Prefix {
		var out []netip.Prefix
		for _, c := range cidrs {
			if p, err := netip.ParsePrefix(c); err == nil {
				out = append(out, p.Masked())
			}
		}
		return out
	}
	allowed, denied := parse(allowedCIDRs), parse(deniedCIDRs)
	dialer := &net.Dialer{Timeout: 10 * time.Second, Control: func(_, address string, _ syscall.RawConn) error {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			return err
		}
		ip, err := netip.ParseAddr(host)
		if err != nil {
			return err
		}
		if !addrAllowed(ip, allowed, denied) {
			return fmt.Errorf("%w: %s", errPushAddressBlocked, ip)
		}
		return nil
	}}
	return &http.Client{
		Transport: &http.Transport{
			DialContext:           dialer.DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: pushRequestTO,
			MaxIdleConnsPerHost:   pushWorkers,
			IdleConnTimeout:       90 * time.Second,
			ForceAttemptHTTP2:     true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// addrAllowed: anything in allowed, else anything not in denied; never the
// unspecified address. IPv4-mapped IPv6 addresses count as IPv4.
func addrAllowed(ip netip.Addr, allowed, denied []netip.Prefix) bool {
	ip = ip.Unmap().WithZone("")
	if !ip.IsValid() || ip.IsUnspecified() {
		return false
	}
	for _, p := range allowed {
		if p.Contains(ip) {
			return true
		}
	}
	for _, p := range denied {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}
