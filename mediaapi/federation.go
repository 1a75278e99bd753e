package mediaapi

import (
	"context"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"os"
	"time"

	"maunium.net/go/mautrix/federation"

	"hearth/httputil"
)

// ServerAuthVerifier is the default RequestVerifier: mautrix's X-Matrix check
// (federation.ServerAuth), with the origin's signing keys fetched from its
// /_matrix/key/v2/server and cached.
type ServerAuthVerifier struct {
	auth *federation.ServerAuth
}

var _ RequestVerifier = (*ServerAuthVerifier)(nil)

// NewServerAuthVerifier verifies requests addressed to serverName, fetching keys
// with client and caching them in keys.
func NewServerAuthVerifier(serverName string, client *federation.Client, keys federation.KeyCache) *ServerAuthVerifier {
	sa := federation.NewServerAuth(client, keys, func(federation.XMatrixAuth) string { return serverName })
	// Media requests are GETs; nothing legitimate has a body.
	sa.MaxBodySize = 64 << 10
	return &ServerAuthVerifier{auth: sa}
}

// VerifyRequest checks the X-Matrix signature of r and returns its origin.
func (v *ServerAuthVerifier) VerifyRequest(r *http.Request) (origin string, err error) {
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	defer func() {
		// Third-party code on untrusted input.
		if p := recover(); p != nil {
			slog.Error("panic verifying federation request", "panic", p)
			origin, err = "", httputil.Unauthorized("Failed to verify request signature")
		}
	}()
	out, rerr := v.auth.Authenticate(r.WithContext(ctx))
	if rerr != nil {
		return "", &httputil.Error{Status: rerr.StatusCode, ErrCode: rerr.ErrCode, Message: rerr.Err}
	}
	return federation.OriginServerNameFromRequest(out), nil
}

// federationAuthed wraps a federation endpoint with request verification.
func (a *API) federationAuthed(h func(w http.ResponseWriter, r *http.Request, origin string) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		origin, err := a.verifier.Load().v.VerifyRequest(r)
		if err == nil {
			err = h(w, r, origin)
		}
		if err != nil {
			respondErr(w, r, err)
		}
	}
}

// federationDownload answers GET /_matrix/federation/v1/media/download/{mediaId}
// (Server-Server API, "Content Repository"): local media only, as multipart/mixed.
func (a *API) federationDownload(w http.ResponseWriter, r *http.Request, _ string) error {
	mediaID := routeVars(r)["mediaId"]
	if !validMediaID(mediaID) {
		return httputil.InvalidParam("Invalid media ID")
	}
	wait, err := waitParam(r.URL.Query())
	if err != nil {
		return err
	}
	m, err := a.localMedia(r.Context(), mediaID, wait)
	if err != nil {
		return err
	}
	return a.serveMultipart(w, &content{sha: m.SHA256, contentType: contentTypeOr(m.ContentType), filename: m.UploadName})
}

// federationThumbnail answers GET /_matrix/federation/v1/media/thumbnail/{mediaId}.
func (a *API) federationThumbnail(w http.ResponseWriter, r *http.Request, _ string) error {
	mediaID := routeVars(r)["mediaId"]
	if !validMediaID(mediaID) {
		return httputil.InvalidParam("Invalid media ID")
	}
	q := r.URL.Query()
	spec, err := thumbParams(q)
	if err != nil {
		return err
	}
	wait, err := waitParam(q)
	if err != nil {
		return err
	}
	m, err := a.localMedia(r.Context(), mediaID, wait)
	if err != nil {
		return err
	}
	c, err := a.thumbnailFor(r.Context(), m, spec)
	if err != nil {
		return err
	}
	return a.serveMultipart(w, c)
}

// serveMultipart writes content as the federation media endpoints do: a
// multipart/mixed body whose first part is the JSON metadata (an empty object for
// now) and whose second part is the bytes, with their own Content-Type and
// Content-Disposition.
func (a *API) serveMultipart(w http.ResponseWriter, c *content) error {
	rd, size, _, err := a.openContent(c)
	if err != nil {
		if os.IsNotExist(err) {
			return errMissingFile(c.sha)
		}
		return internalErr(err)
	}
	defer rd.Close()
	mw := multipart.NewWriter(w)
	h := w.Header()
	h.Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
	w.WriteHeader(http.StatusOK)
	meta, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
	if err != nil {
		return nil // the connection is gone; the status is already sent
	}
	if _, err := io.WriteString(meta, "{}"); err != nil {
		return nil
	}
	part, err := mw.CreatePart(textproto.MIMEHeader{
		"Content-Type":        {c.contentType},
		"Content-Disposition": {contentDisposition(c.contentType, c.filename, c.thumbnail)},
	})
	if err != nil {
		return nil
	}
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	if _, err := io.CopyBuffer(part, io.LimitReader(rd, size), *bp); err != nil {
		return nil
	}
	_ = mw.Close()
	return nil
}
