// Package httputil holds the HTTP plumbing every API face shares: Matrix errors as
// values (errcode + HTTP status + message, written in one place), JSON responses and
// strict JSON request decoding.
package httputil

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
)

// Error is a Matrix error response: an errcode, an HTTP status and a message, plus
// any extra fields the spec defines for that errcode (retry_after_ms, soft_logout …).
type Error struct {
	Status  int
	ErrCode string
	Message string
	Extra   map[string]any
}

func (e *Error) Error() string { return fmt.Sprintf("%s (%d): %s", e.ErrCode, e.Status, e.Message) }

// MarshalJSON writes {"errcode":…, "error":…, extra…}.
func (e *Error) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, 2+len(e.Extra))
	for k, v := range e.Extra {
		m[k] = v
	}
	m["errcode"] = e.ErrCode
	m["error"] = e.Message
	return json.Marshal(m)
}

// With returns a copy of e with an extra field set.
func (e *Error) With(key string, value any) *Error {
	c := *e
	c.Extra = make(map[string]any, len(e.Extra)+1)
	for k, v := range e.Extra {
		c.Extra[k] = v
	}
	c.Extra[key] = value
	return &c
}

func newErr(status int, code string) func(format string, args ...any) *Error {
	return func(format string, args ...any) *Error {
		msg := format
		if len(args) > 0 {
			msg = fmt.Sprintf(format, args...)
		}
		return &Error{Status: status, ErrCode: code, Message: msg}
	}
}

// Constructors for the spec's common errors, each with its HTTP status.
var (
	Forbidden        = newErr(http.StatusForbidden, "M_FORBIDDEN")
	UnknownToken     = newErr(http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	MissingToken     = newErr(http.StatusUnauthorized, "M_MISSING_TOKEN")
	Unauthorized     = newErr(http.StatusUnauthorized, "M_UNAUTHORIZED")
	BadJSON          = newErr(http.StatusBadRequest, "M_BAD_JSON")
	NotJSON          = newErr(http.StatusBadRequest, "M_NOT_JSON")
	NotFound         = newErr(http.StatusNotFound, "M_NOT_FOUND")
	Unrecognized     = newErr(http.StatusNotFound, "M_UNRECOGNIZED")
	MissingParam     = newErr(http.StatusBadRequest, "M_MISSING_PARAM")
	InvalidParam     = newErr(http.StatusBadRequest, "M_INVALID_PARAM")
	TooLarge         = newErr(http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	UserInUse        = newErr(http.StatusBadRequest, "M_USER_IN_USE")
	InvalidUsername  = newErr(http.StatusBadRequest, "M_INVALID_USERNAME")
	Exclusive        = newErr(http.StatusBadRequest, "M_EXCLUSIVE")
	RoomInUse        = newErr(http.StatusBadRequest, "M_ROOM_IN_USE")
	UnsupportedRoomV = newErr(http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION")
	Unknown          = newErr(http.StatusBadRequest, "M_UNKNOWN")
	UserDeactivated  = newErr(http.StatusForbidden, "M_USER_DEACTIVATED")
	GuestAccessForb  = newErr(http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
	Internal         = newErr(http.StatusInternalServerError, "M_UNKNOWN")
)

// LimitExceeded is M_LIMIT_EXCEEDED (429) with retry_after_ms.
func LimitExceeded(retryAfterMS int64) *Error {
	return (&Error{Status: http.StatusTooManyRequests, ErrCode: "M_LIMIT_EXCEEDED", Message: "Too many requests"}).With("retry_after_ms", retryAfterMS)
}

// MethodNotAllowed is the 405 answer for a known path with the wrong method.
func MethodNotAllowed() *Error {
	return &Error{Status: http.StatusMethodNotAllowed, ErrCode: "M_UNRECOGNIZED", Message: "Method not allowed on this endpoint"}
}

// RespondJSON writes v as a JSON response with the given status.
func RespondJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		slog.Error("encoding JSON response", "err", err)
		status, b = http.StatusInternalServerError, []byte(`{"errcode":"M_UNKNOWN","error":"Internal server error"}`)
	}
	WriteJSONBytes(w, status, b)
}

// WriteJSONBytes writes an already-encoded JSON body.
func WriteJSONBytes(w http.ResponseWriter, status int, b []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// RespondError writes err as a Matrix error. A *Error is written as it is; anything
// else is logged and answered with a generic 500, never leaking internals.
func RespondError(w http.ResponseWriter, r *http.Request, err error) {
	var me *Error
	if errors.As(err, &me) {
		if me.Status >= 500 {
			slog.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", me.Message)
			RespondJSON(w, me.Status, &Error{Status: me.Status, ErrCode: "M_UNKNOWN", Message: "Internal server error"})
			return
		}
		RespondJSON(w, me.Status, me)
		return
	}
	slog.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	RespondJSON(w, http.StatusInternalServerError, &Error{Status: 500, ErrCode: "M_UNKNOWN", Message: "Internal server error"})
}
