package mediaapi

import (
	"bytes"
	"io"
	"mime"
	"net/http"
	"os"
	"strings"
	"time"
)

// content is what a download or thumbnail request is answered with: a stored blob
// (sha) or, for a thumbnail that was not cached, bytes in memory.
type content struct {
	sha         string
	data        []byte
	contentType string
	filename    string
	// thumbnail content is always served inline (it is an image made here).
	thumbnail bool
	modTime   time.Time
}

// contentSecurityPolicy is the policy the spec recommends for served media
// (Client-Server API, "Content repository").
const contentSecurityPolicy = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"

// inlineTypes are the content types safe to serve with Content-Disposition:
// inline (Client-Server API, "Serving inline content"); anything else is an
// attachment.
var inlineTypes = map[string]bool{
	"text/css": true, "text/plain": true, "text/csv": true,
	"application/json": true, "application/ld+json": true,
	"image/jpeg": true, "image/gif": true, "image/png": true, "image/apng": true, "image/webp": true, "image/avif": true,
	"video/mp4": true, "video/webm": true, "video/ogg": true, "video/quicktime": true,
	"audio/mp4": true, "audio/webm": true, "audio/aac": true, "audio/mpeg": true, "audio/ogg": true,
	"audio/wave": true, "audio/wav": true, "audio/x-wav": true, "audio/x-pn-wav": true, "audio/flac": true, "audio/x-flac": true,
}

// baseMediaType is the lower-cased type/subtype of a Content-Type value.
func baseMediaType(ct string) string {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.ToLower(strings.TrimSpace(ct))
}

// cleanContentType normalises an uploaded or remote Content-Type: unparsable or
// missing becomes application/octet-stream (Client-Server API: the default when
// none is given).
func cleanContentType(ct string) string {
	if ct == "" || len(ct) > 255 {
		return "application/octet-stream"
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || !strings.Contains(mt, "/") {
		return "application/octet-stream"
	}
	out := mime.FormatMediaType(mt, params)
	if out == "" {
		return mt
	}
	return out
}

// contentDisposition is "inline" for safe types and "attachment" otherwise, with
// the file name when there is one (RFC 6266, with RFC 2231 encoding of non-ASCII
// names done by mime.FormatMediaType).
func contentDisposition(contentType, filename string, forceInline bool) string {
	disp := "attachment"
	if forceInline || inlineTypes[baseMediaType(contentType)] {
		disp = "inline"
	}
	if filename != "" {
		if v := mime.FormatMediaType(disp, map[string]string{"filename": filename}); v != "" {
			return v
		}
	}
	return disp
}

// setMediaHeaders sets the headers every served piece of media carries.
func setMediaHeaders(h http.Header, c *content) {
	h.Set("Content-Type", c.contentType)
	h.Set("Content-Disposition", contentDisposition(c.contentType, c.filename, c.thumbnail))
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	// Content never changes under an mxc:// URI; it may be deleted, so shared
	// caches are kept out and private ones hold it for a day.
	h.Set("Cache-Control", "private, max-age=86400")
	if c.sha != "" {
		h.Set("ETag", `"`+c.sha+`"`)
	}
}

// open returns a reader over the content and its size.
func (a *API) openContent(c *content) (io.ReadSeekCloser, int64, time.Time, error) {
	if c.sha == "" {
		return nopSeekCloser{bytes.NewReader(c.data)}, int64(len(c.data)), c.modTime, nil
	}
	f, err := a.store.open(c.sha)
	if err != nil {
		return nil, 0, time.Time{}, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, time.Time{}, err
	}
	return f, st.Size(), st.ModTime(), nil
}

type nopSeekCloser struct{ *bytes.Reader }

func (nopSeekCloser) Close() error { return nil }

// serveContent answers a client download: headers, then the bytes through
// http.ServeContent, which handles Range, If-Range, If-None-Match and HEAD.
func (a *API) serveContent(w http.ResponseWriter, r *http.Request, c *content) error {
	rd, _, mod, err := a.openContent(c)
	if err != nil {
		if os.IsNotExist(err) {
			return errMissingFile(c.sha)
		}
		return internalErr(err)
	}
	defer rd.Close()
	setMediaHeaders(w.Header(), c)
	http.ServeContent(w, r, "", mod, rd)
	return nil
}
