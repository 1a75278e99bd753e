package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix/federation"
)

// Cache lifetimes for server discovery (Server-Server API, "Resolving server
// names", step 3: respect cache headers, 24 hours by default, at most 48; errors
// for up to an hour with exponential back-off).
const (
	wellKnownDefaultTTL = 24 * time.Hour
	wellKnownMinTTL     = 5 * time.Minute
	wellKnownMaxTTL     = 48 * time.Hour
	wellKnownAbsentTTL  = time.Hour       // a definite "no delegation" (404, bad body)
	wellKnownErrorTTL   = 2 * time.Minute // first network/5xx failure; doubles, capped at an hour
	srvTTL              = time.Hour
	wellKnownMaxBytes   = 64 << 10
)

// resolvedServer is where and how to reach a server name.
type resolvedServer struct {
	// hostHeader is the Host header and, without its port, the TLS server name
	// (no SNI for IP literals).
	hostHeader string
	// addrs are host:port pairs to dial in order (hosts are resolved when dialled,
	// so the network guard sees the final address).
	addrs   []string
	expires time.Time
}

type wellKnownResult struct {
	server   string // m.server, or "" when there is no (valid) delegation
	expires  time.Time
	failures int // consecutive transient failures, for back-off
}

// resolver implements server discovery with caches.
type resolver struct {
	httpClient *http.Client // for .well-known; guarded like every outbound connection
	lookupSRV  func(ctx context.Context, service, proto, name string) (string, []*net.SRV, error)
	now        func() time.Time

	mu        sync.Mutex
	resolved  map[string]*resolvedServer
	wellKnown map[string]*wellKnownResult
	inflight  map[string]*resolveCall
}

type resolveCall struct {
	done chan struct{}
	res  *resolvedServer
	err  error
}

func newResolver(httpClient *http.Client) *resolver {
	return &resolver{
		httpClient: httpClient,
		lookupSRV:  net.DefaultResolver.LookupSRV,
		now:        time.Now,
		resolved:   make(map[string]*resolvedServer),
		wellKnown:  make(map[string]*wellKnownResult),
		inflight:   make(map[string]*resolveCall),
	}
}

// resolve returns how to reach serverName, from the cache when fresh; concurrent
// calls for one name share one lookup.
func (r *resolver) resolve(ctx context.Context, serverName string) (*resolvedServer, error) {
	r.mu.Lock()
	if res, ok := r.resolved[serverName]; ok && r.now().Before(res.expires) {
		r.mu.Unlock()
		return res, nil
	}
	if c, ok := r.inflight[serverName]; ok {
		r.mu.Unlock()
		select {
		case <-c.done:
			return c.res, c.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c := &resolveCall{done: make(chan struct{})}
	r.inflight[serverName] = c
	r.mu.Unlock()

	c.res, c.err = r.discover(ctx, serverName)
	r.mu.Lock()
	delete(r.inflight, serverName)
	if c.err == nil {
		r.resolved[serverName] = c.res
	}
	r.mu.Unlock()
	close(c.done)
	return c.res, c.err
}

// discover runs the steps of "Resolving server names".
func (r *resolver) discover(ctx context.Context, serverName string) (*resolvedServer, error) {
	host, port, ok := federation.ParseServerName(serverName)
	if !ok {
		return nil, fmt.Errorf("%w: %q", federation.ErrInvalidServerName, serverName)
	}
	now := r.now()
	// Steps 1 and 2: an IP literal, or a host name with an explicit port, is used as
	// it is, with the server name as the Host header.
	if net.ParseIP(host) != nil || port != 0 {
		return &resolvedServer{hostHeader: serverName, addrs: []string{joinHostPort(host, port)}, expires: now.Add(wellKnownMaxTTL)}, nil
	}
	// Step 3: .well-known delegation.
	wk := r.lookupWellKnown(ctx, host)
	if wk.server != "" {
		dHost, dPort, ok := federation.ParseServerName(wk.server)
		if ok {
			expires := wk.expires
			// 3.1 and 3.2: an IP literal or an explicit port; Host is the delegated
			// server name as written.
			if net.ParseIP(dHost) != nil || dPort != 0 {
				return &resolvedServer{hostHeader: wk.server, addrs: []string{joinHostPort(dHost, dPort)}, expires: expires}, nil
			}
			// 3.3–3.5: SRV records of the delegated host name, else port 8448; Host
			// is the delegated host name.
			addrs := r.srvTargets(ctx, dHost)
			if len(addrs) == 0 {
				addrs = []string{net.JoinHostPort(dHost, "8448")}
			}
			return &resolvedServer{hostHeader: dHost, addrs: addrs, expires: minTime(expires, now.Add(srvTTL))}, nil
		}
	}
	// Steps 4–6: SRV records of the host name, else port 8448; Host is the host name.
	addrs := r.srvTargets(ctx, host)
	if len(addrs) == 0 {
		addrs = []string{net.JoinHostPort(host, "8448")}
	}
	return &resolvedServer{hostHeader: host, addrs: addrs, expires: minTime(wk.expires, now.Add(srvTTL))}, nil
}

// srvTargets looks up _matrix-fed._tcp, then the deprecated _matrix._tcp, and
// returns the targets in priority/weight order (as net.LookupSRV sorts them).
func (r *resolver) srvTargets(ctx context.Context, host string) []string {
	for _, service := range []string{"matrix-fed", "matrix"} {
		_, recs, err := r.lookupSRV(ctx, service, "tcp", host)
		if err != nil || len(recs) == 0 {
			continue
		}
		out := make([]string, 0, len(recs))
		for _, rec := range recs {
			target := strings.TrimSuffix(rec.Target, ".")
			if target == "" {
				continue // "." means the service is decidedly not available
			}
			out = append(out, net.JoinHostPort(target, strconv.Itoa(int(rec.Port))))
		}
		if len(out) > 0 {
			return out
		}
	}
	return nil
}

// lookupWellKnown returns the (cached) .well-known delegation of host.
func (r *resolver) lookupWellKnown(ctx context.Context, host string) *wellKnownResult {
	now := r.now()
	r.mu.Lock()
	prev := r.wellKnown[host]
	r.mu.Unlock()
	if prev != nil && now.Before(prev.expires) {
		return prev
	}
	res := &wellKnownResult{}
	server, ttl, transient, err := r.fetchWellKnown(ctx, host)
	switch {
	case err == nil:
		res.server, res.expires = server, now.Add(ttl)
	case transient:
		res.failures = 1
		if prev != nil && prev.failures > 0 {
			res.failures = prev.failures + 1
		}
		backoff := wellKnownErrorTTL << min(res.failures-1, 5)
		res.expires = now.Add(min(backoff, time.Hour))
	default:
		res.expires = now.Add(wellKnownAbsentTTL)
	}
	r.mu.Lock()
	r.wellKnown[host] = res
	r.mu.Unlock()
	return res
}

// fetchWellKnown requests https://host/.well-known/matrix/server. It returns the
// delegated server name and how long to cache it; on error, transient says whether
// the failure was a network error or a 5xx rather than a definite answer.
func (r *resolver) fetchWellKnown(ctx context.Context, host string) (server string, ttl time.Duration, transient bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+host+"/.well-known/matrix/server", nil)
	if err != nil {
		return "", 0, false, err
	}
	resp, err := r.httpClient.Do(req)
	if err != nil {
		return "", 0, true, fmt.Errorf("fetching .well-known of %s: %w", host, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", 0, resp.StatusCode >= 500, fmt.Errorf(".well-known of %s: status %d", host, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, wellKnownMaxBytes+1))
	if err != nil {
		return "", 0, true, fmt.Errorf("reading .well-known of %s: %w", host, err)
	}
	if len(body) > wellKnownMaxBytes {
		return "", 0, false, fmt.Errorf(".well-known of %s is too large", host)
	}
	var wk struct {
		Server any `json:"m.server"`
	}
	if err := json.Unmarshal(body, &wk); err != nil {
		return "", 0, false, fmt.Errorf(".well-known of %s: %w", host, err)
	}
	s, ok := wk.Server.(string)
	if !ok {
		return "", 0, false, fmt.Errorf(".well-known of %s has no m.server string", host)
	}
	if _, _, ok := federation.ParseServerName(s); !ok {
		return "", 0, false, fmt.Errorf(".well-known of %s: m.server %q is not a server name", host, s)
	}
	return s, cacheTTL(resp.Header), false, nil
}

// cacheTTL reads Cache-Control max-age (less Age), clamped to the allowed range.
// no-store/no-cache give the minimum; no header gives the default.
func cacheTTL(h http.Header) time.Duration {
	cc := h.Get("Cache-Control")
	if cc == "" {
		return wellKnownDefaultTTL
	}
	ttl := wellKnownDefaultTTL
	for _, part := range strings.Split(cc, ",") {
		name, value, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch strings.ToLower(name) {
		case "no-store", "no-cache":
			return wellKnownMinTTL
		case "max-age":
			secs, err := strconv.ParseInt(strings.Trim(value, `"`), 10, 64)
			if err != nil || secs < 0 {
				continue
			}
			age, _ := strconv.ParseInt(h.Get("Age"), 10, 64)
			ttl = time.Duration(max(secs-max(age, 0), 0)) * time.Second
		}
	}
	return min(max(ttl, wellKnownMinTTL), wellKnownMaxTTL)
}

func joinHostPort(host string, port uint16) string {
	if port == 0 {
		port = 8448
	}
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}

func minTime(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

// errNoAddress is returned when no address of a resolved server could be dialled.
var errNoAddress = errors.New("no address to dial")
