package federationapi

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/httputil"
	"hearth/roomserver/events"
)

// xMatrix is a parsed X-Matrix Authorization header.
type xMatrix struct {
	origin, destination, key, sig string
}

// parseXMatrix parses an Authorization header of the X-Matrix scheme (Server-Server
// API, "Request Authentication"): the scheme (any case), one or more spaces, then
// comma-separated name=value parameters with optional whitespace around commas;
// names are case-insensitive; values are tokens or quoted strings with backslash
// escapes, and unquoted values may contain colons. Unknown parameters are ignored.
func parseXMatrix(h string) (xMatrix, error) {
	var x xMatrix
	scheme, rest, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "X-Matrix") {
		return x, errors.New("authorization scheme is not X-Matrix")
	}
	s := rest
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			break
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return x, errors.New("malformed X-Matrix parameter")
		}
		name := strings.ToLower(strings.TrimSpace(s[:eq]))
		s = strings.TrimLeft(s[eq+1:], " \t")
		var value string
		if strings.HasPrefix(s, `"`) {
			var b strings.Builder
			i := 1
			closed := false
			for ; i < len(s); i++ {
				c := s[i]
				if c == '\\' && i+1 < len(s) {
					i++
					b.WriteByte(s[i])
					continue
				}
				if c == '"' {
					closed = true
					i++
					break
				}
				b.WriteByte(c)
			}
			if !closed {
				return x, errors.New("unterminated quoted X-Matrix value")
			}
			value, s = b.String(), s[i:]
		} else {
			end := strings.IndexAny(s, ", \t")
			if end < 0 {
				end = len(s)
			}
			value, s = s[:end], s[end:]
		}
		switch name {
		case "origin":
			x.origin = value
		case "destination":
			x.destination = value
		case "key":
			x.key = value
		case "sig":
			x.sig = value
		}
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			break
		}
		if s[0] != ',' {
			return x, errors.New("malformed X-Matrix parameter list")
		}
		s = s[1:]
	}
	return x, nil
}

type ctxKeyOrigin struct{}

// originOf returns the authenticated origin server of a federation request.
func originOf(ctx context.Context) string {
	s, _ := ctx.Value(ctxKeyOrigin{}).(string)
	return s
}

// authenticate checks the X-Matrix signature of r and returns the origin server
// and the request with its body restored. Every failure is 401 M_UNAUTHORIZED
// (bodies that are not JSON: M_NOT_JSON), decided before the handler does any work.
func (a *API) authenticate(r *http.Request) (string, *http.Request, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", nil, httputil.Unauthorized("Missing X-Matrix Authorization header")
	}
	x, err := parseXMatrix(h)
	if err != nil {
		return "", nil, httputil.Unauthorized("Bad Authorization header: %v", err)
	}
	if x.origin == "" || x.key == "" || x.sig == "" {
		return "", nil, httputil.Unauthorized("X-Matrix header lacks origin, key or sig")
	}
	if err := config.ValidateServerName(x.origin); err != nil {
		return "", nil, httputil.Unauthorized("X-Matrix origin is not a server name")
	}
	if x.destination != "" && x.destination != a.serverName {
		return "", nil, httputil.Unauthorized("X-Matrix destination %q is not this server", x.destination)
	}
	if x.origin == a.serverName {
		return "", nil, httputil.Unauthorized("Requests from this server's own name are not accepted")
	}
	sig, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(x.sig, "="))
	if err != nil || len(sig) != ed25519.SignatureSize {
		return "", nil, httputil.Unauthorized("Malformed signature")
	}
	now := a.keyRing.now()
	key, err := a.keyRing.Key(r.Context(), x.origin, id.KeyID(x.key), now)
	if err != nil {
		return "", nil, httputil.Unauthorized("Cannot find key %s of %s", x.key, x.origin)
	}
	// Only current keys sign requests; old_verify_keys are for events.
	if key.old || key.validUntil.Before(now) {
		return "", nil, httputil.Unauthorized("Key %s of %s is expired", x.key, x.origin)
	}
	pub, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(string(key.key), "="))
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return "", nil, httputil.Unauthorized("Key %s of %s is malformed", x.key, x.origin)
	}
	var body []byte
	if r.Body != nil && r.Method != http.MethodGet && r.Method != http.MethodHead {
		if body, err = io.ReadAll(r.Body); err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return "", nil, httputil.TooLarge("Request body exceeds %d bytes", mbe.Limit)
			}
			return "", nil, httputil.BadJSON("Could not read request body")
		}
	}
	uri := r.RequestURI
	if uri == "" {
		uri = r.URL.RequestURI()
	}
	msg, err := signedRequestJSON(r.Method, uri, x.origin, a.serverName, body)
	if err != nil {
		return "", nil, httputil.NotJSON("Request body is not valid JSON")
	}
	if !ed25519.Verify(pub, msg, sig) && !emptyObjectSignedWithoutContent(pub, sig, r.Method, uri, x.origin, a.serverName, body) {
		return "", nil, httputil.Unauthorized("Signature of %s does not verify", x.origin)
	}
	ctx := context.WithValue(r.Context(), ctxKeyOrigin{}, x.origin)
	r2 := r.WithContext(ctx)
	if body != nil {
		r2.Body = io.NopCloser(bytes.NewReader(body))
	}
	return x.origin, r2, nil
}

// emptyObjectSignedWithoutContent accepts a request whose body is the empty
// object {} but whose signature leaves "content" out, as mautrix-go's federation
// client does for empty bodies. The signature still covers method, URI, origin and
// destination, and {} carries nothing to protect.
func emptyObjectSignedWithoutContent(pub ed25519.PublicKey, sig []byte, method, uri, origin, destination string, body []byte) bool {
	var obj map[string]json.RawMessage
	if len(body) == 0 || json.Unmarshal(body, &obj) != nil || obj == nil || len(obj) != 0 {
		return false
	}
	msg, err := signedRequestJSON(method, uri, origin, destination, nil)
	return err == nil && ed25519.Verify(pub, msg, sig)
}

// signedRequestJSON builds the canonical JSON an X-Matrix signature covers.
func signedRequestJSON(method, uri, origin, destination string, body []byte) ([]byte, error) {
	obj := map[string]json.RawMessage{}
	str := func(s string) json.RawMessage { b, _ := json.Marshal(s); return b }
	obj["method"], obj["uri"], obj["origin"], obj["destination"] = str(method), str(uri), str(origin), str(destination)
	if len(bytes.TrimSpace(body)) > 0 {
		if !json.Valid(body) {
			return nil, errors.New("body is not JSON")
		}
		obj["content"] = body
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	return events.CanonicalJSON(b)
}

// authedHandler is a federation handler given the authenticated origin.
type authedHandler func(w http.ResponseWriter, r *http.Request, origin string) error

// authed wraps h with request authentication, the origin's server ACL check is
// left to handlers that know the room.
func (a *API) authed(h authedHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		origin, r2, err := a.authenticate(r)
		if err != nil {
			var me *httputil.Error
			if errors.As(err, &me) && me.Status == http.StatusUnauthorized {
				slog.Debug("rejected federation request", "path", r.URL.Path, "reason", me.Message)
			}
			httputil.RespondError(w, r, err)
			return
		}
		a.serverAlive(origin)
		if err := h(w, r2, origin); err != nil {
			respondErr(w, r2, err)
		}
	}
}

// public wraps an unauthenticated handler (keys, version).
func public(h func(w http.ResponseWriter, r *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			respondErr(w, r, err)
		}
	}
}

func respondErr(w http.ResponseWriter, r *http.Request, err error) {
	var me *httputil.Error
	if !errors.As(err, &me) {
		err = fmt.Errorf("%s %s: %w", r.Method, r.URL.Path, err)
	}
	httputil.RespondError(w, r, err)
}
