package events

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error returned by Parse, Build and CanonicalJSON wraps
// exactly one of them, so a caller maps it to a Matrix error code with
// errors.Is (or with Errcode).
var (
	// ErrNotJSON means the input is not well-formed JSON (M_NOT_JSON).
	ErrNotJSON = errors.New("not valid JSON")
	// ErrBadJSON means the input is JSON but breaks the event format or the
	// canonical JSON rules of the room version (M_BAD_JSON).
	ErrBadJSON = errors.New("bad JSON")
	// ErrTooLarge means the event, or one of its size-limited fields, is too
	// large (M_TOO_LARGE).
	ErrTooLarge = errors.New("event too large")
	// ErrUnknownRoomVersion means the room version is not one Hearth supports
	// (M_UNSUPPORTED_ROOM_VERSION).
	ErrUnknownRoomVersion = errors.New("unsupported room version")
)

// Errcode returns the Matrix error code for an error from this package, or ""
// if err wraps none of the sentinels above.
func Errcode(err error) string {
	switch {
	case errors.Is(err, ErrTooLarge):
		return "M_TOO_LARGE"
	case errors.Is(err, ErrNotJSON):
		return "M_NOT_JSON"
	case errors.Is(err, ErrBadJSON):
		return "M_BAD_JSON"
	case errors.Is(err, ErrUnknownRoomVersion):
		return "M_UNSUPPORTED_ROOM_VERSION"
	default:
		return ""
	}
}

func notJSON(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrNotJSON}, args...)...)
}

func badJSON(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadJSON}, args...)...)
}

func tooLarge(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrTooLarge}, args...)...)
}
