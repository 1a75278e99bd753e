package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"unicode/utf8"

	"hearth/clientapi/accounts"
	"hearth/httputil"
)

// Authentication types (Client-Server API, "Authentication types").
const (
	stageDummy    = "m.login.dummy"
	stagePassword = "m.login.password"
	stageRegToken = "m.login.registration_token"
)

// uiaChallenge is the 401 body of the User-Interactive Authentication API: the
// flows, the session, the stages completed and, after a failed attempt, an
// errcode. It is returned as an error and written by respondErr.
type uiaChallenge struct {
	Flows     []uiaFlow      `json:"flows"`
	Params    map[string]any `json:"params"`
	Session   string         `json:"session"`
	Completed []string       `json:"completed,omitempty"`
	ErrCode   string         `json:"errcode,omitempty"`
	Err       string         `json:"error,omitempty"`
}

type uiaFlow struct {
	Stages []string `json:"stages"`
}

func (c *uiaChallenge) Error() string {
	if c.ErrCode != "" {
		return "user-interactive auth required: " + c.ErrCode + ": " + c.Err
	}
	return "user-interactive auth required"
}

// uiaRequest describes what a UIA-protected request needs.
type uiaRequest struct {
	// operation binds the session to one request (e.g. "delete_device:ABC"), so
	// that a completed session cannot authorise something else.
	operation string
	// localpart is the user authenticating; "" for registration.
	localpart string
	flows     [][]string
}

// authDict is the "auth" object of a UIA request.
type authDict struct {
	Type       string          `json:"type"`
	Session    string          `json:"session"`
	Password   string          `json:"password"`
	Token      string          `json:"token"`
	User       string          `json:"user"`
	Identifier json.RawMessage `json:"identifier"`
}

// userIdentifier is the identifier object of m.login.password.
type userIdentifier struct {
	Type string `json:"type"`
	User string `json:"user"`
}

// userInteractiveAuth runs the User-Interactive Authentication API for a request
// whose body carried raw as its "auth". It returns the session once a flow is
// complete; otherwise a *uiaChallenge (401) or another error.
func (a *API) userInteractiveAuth(ctx context.Context, r *http.Request, raw json.RawMessage, req uiaRequest) (*accounts.UIASession, error) {
	if len(raw) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		// "A request to an endpoint that uses User-Interactive Authentication
		// never succeeds without auth."
		sess, err := a.accounts.CreateUIASession(ctx, req.operation, req.localpart)
		if err != nil {
			return nil, internalErr(err)
		}
		return nil, a.challenge(req, sess, "", "")
	}
	var ad authDict
	if err := httputil.UnmarshalJSON(raw, &ad); err != nil {
		return nil, httputil.BadJSON("auth: %s", err.Message)
	}
	var sess *accounts.UIASession
	var err error
	if ad.Session != "" {
		sess, err = a.accounts.UIASession(ctx, ad.Session)
		if errors.Is(err, accounts.ErrNotFound) {
			return nil, httputil.Unknown("Unknown or expired session %q", ad.Session)
		}
		if err != nil {
			return nil, internalErr(err)
		}
		if sess.Operation != req.operation || sess.Localpart != req.localpart {
			return nil, httputil.Forbidden("Requested operation has changed during the UI authentication session")
		}
	} else {
		if sess, err = a.accounts.CreateUIASession(ctx, req.operation, req.localpart); err != nil {
			return nil, internalErr(err)
		}
	}
	if ad.Type != "" && !containsString(sess.Completed, ad.Type) {
		if !inAnyFlow(req.flows, ad.Type) {
			return nil, a.challenge(req, sess, "M_UNRECOGNIZED", "Authentication type "+ad.Type+" is not offered here")
		}
		if !nextInSomeFlow(req.flows, sess.Completed, ad.Type) {
			return nil, a.challenge(req, sess, "M_FORBIDDEN", "Stages must be completed in the order of a flow")
		}
		if err := a.runStage(ctx, r, req, sess, &ad); err != nil {
			return nil, err
		}
	}
	if flowComplete(req.flows, sess.Completed) {
		return sess, nil
	}
	return nil, a.challenge(req, sess, "", "")
}

// runStage attempts one stage, recording it on success.
func (a *API) runStage(ctx context.Context, r *http.Request, req uiaRequest, sess *accounts.UIASession, ad *authDict) error {
	switch ad.Type {
	case stageDummy:
	case stagePassword:
		if err := a.loginLimit.check(r); err != nil {
			return err
		}
		lp, ok, err := a.identifiedLocalpart(ad)
		if err != nil {
			return err
		}
		if !ok {
			return a.challenge(req, sess, "M_FORBIDDEN", "Unknown user identifier")
		}
		if lp != req.localpart {
			// Re-authentication must be as the user making the request: another
			// user's credentials are refused outright (403, as Synapse answers),
			// without checking their password.
			return httputil.Forbidden("The identifier does not match the authenticated user")
		}
		_, good, err := a.accounts.CheckPassword(ctx, lp, ad.Password)
		if err != nil {
			return internalErr(err)
		}
		if !good {
			return a.challenge(req, sess, "M_FORBIDDEN", "Invalid password")
		}
	case stageRegToken:
		if ad.Token == "" {
			return a.challenge(req, sess, "M_MISSING_PARAM", "Missing registration token")
		}
		ok, err := a.accounts.ReserveRegistrationToken(ctx, sess, ad.Token, stageRegToken)
		if err != nil {
			return internalErr(err)
		}
		if !ok {
			return a.challenge(req, sess, "M_UNAUTHORIZED", "Invalid registration token")
		}
		return nil
	default:
		return a.challenge(req, sess, "M_UNRECOGNIZED", "Unsupported authentication type "+ad.Type)
	}
	if err := a.accounts.CompleteUIAStage(ctx, sess, ad.Type); err != nil {
		return internalErr(err)
	}
	return nil
}

// identifiedLocalpart resolves the user of an m.login.password auth dict (the
// m.id.user identifier, or the deprecated top-level "user") to a local localpart.
func (a *API) identifiedLocalpart(ad *authDict) (string, bool, error) {
	user := ad.User
	if len(ad.Identifier) > 0 {
		var ui userIdentifier
		if err := unmarshalObject(ad.Identifier, &ui); err != nil {
			return "", false, httputil.BadJSON("auth.identifier must be an object with string type and user")
		}
		if ui.Type != "m.id.user" {
			return "", false, nil
		}
		user = ui.User
	}
	lp, ok := a.localpartOf(user)
	return lp, ok, nil
}

// localpartOf maps a login identifier — a full user ID of this server or a bare
// localpart, in any case — to the lower-cased localpart.
func (a *API) localpartOf(user string) (string, bool) {
	if strings.HasPrefix(user, "@") {
		lp, server, ok := strings.Cut(user[1:], ":")
		if !ok || server != a.cfg.ServerName {
			return "", false
		}
		user = lp
	}
	user = strings.ToLower(user)
	if a.accounts.ValidateLocalpart(user) != nil {
		return "", false
	}
	return user, true
}

func (a *API) challenge(req uiaRequest, sess *accounts.UIASession, errcode, msg string) *uiaChallenge {
	ch := &uiaChallenge{Params: map[string]any{}, Session: sess.ID, Completed: sess.Completed, ErrCode: errcode, Err: msg}
	for _, f := range req.flows {
		ch.Flows = append(ch.Flows, uiaFlow{Stages: f})
	}
	return ch
}

func inAnyFlow(flows [][]string, stage string) bool {
	for _, f := range flows {
		if containsString(f, stage) {
			return true
		}
	}
	return false
}

// nextInSomeFlow reports whether completed+stage is a prefix of some flow.
func nextInSomeFlow(flows [][]string, completed []string, stage string) bool {
	for _, f := range flows {
		if len(f) > len(completed) && hasPrefix(f, completed) && f[len(completed)] == stage {
			return true
		}
	}
	return false
}

func flowComplete(flows [][]string, completed []string) bool {
	for _, f := range flows {
		if len(f) == len(completed) && hasPrefix(f, completed) {
			return true
		}
	}
	return false
}

func hasPrefix(flow, prefix []string) bool {
	for i, s := range prefix {
		if flow[i] != s {
			return false
		}
	}
	return true
}

// passwordUIA is the one flow offered for re-authenticating a logged-in user.
var passwordUIA = [][]string{{stagePassword}}

// decodeOptionalJSON decodes a body that may be absent (DELETE requests with no
// body, UIA probes): an empty body leaves v untouched.
func decodeOptionalJSON(r *http.Request, v any) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	return unmarshalObject(body, v)
}

// decodeJSON decodes a required JSON object body.
func decodeJSON(r *http.Request, v any) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	return unmarshalObject(body, v)
}

// unmarshalObject decodes body, which must be a JSON object, into v. JSON text
// must be UTF-8 (RFC 8259, section 8.1); Go's decoder would quietly replace
// invalid sequences, so they are refused here as not JSON.
func unmarshalObject(body []byte, v any) error {
	if !utf8.Valid(body) {
		return httputil.NotJSON("Request body is not valid UTF-8")
	}
	if herr := httputil.UnmarshalJSON(body, v); herr != nil {
		return herr
	}
	if t := bytes.TrimSpace(body); len(t) == 0 || t[0] != '{' {
		return httputil.BadJSON("Request body must be a JSON object")
	}
	return nil
}

func readBody(r *http.Request) ([]byte, error) {
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(r.Body); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, httputil.TooLarge("Request body exceeds %d bytes", mbe.Limit)
		}
		return nil, httputil.BadJSON("Could not read request body")
	}
	return buf.Bytes(), nil
}
