package httputil

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
)

// DecodeJSON reads the request body (already size-limited by the server's middleware)
// into v. Not JSON at all gives M_NOT_JSON; JSON of the wrong shape gives M_BAD_JSON;
// a body over the limit gives M_TOO_LARGE.
func DecodeJSON(r *http.Request, v any) *Error {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return TooLarge("Request body exceeds %d bytes", mbe.Limit)
		}
		return BadJSON("Could not read request body")
	}
	return UnmarshalJSON(body, v)
}

// UnmarshalJSON decodes body into v with the same error mapping as DecodeJSON.
func UnmarshalJSON(body []byte, v any) *Error {
	if len(body) == 0 {
		return NotJSON("Request body is empty; expected a JSON object")
	}
	if !json.Valid(body) {
		return NotJSON("Request body is not valid JSON")
	}
	if err := json.Unmarshal(body, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return BadJSON("Field %q has the wrong type: expected %s", te.Field, te.Type.String())
		}
		return BadJSON("Request body has the wrong shape: %v", err)
	}
	return nil
}
