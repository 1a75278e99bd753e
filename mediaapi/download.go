package mediaapi

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"hearth/httputil"
)

// download answers GET /_matrix/client/v1/media/download/{serverName}/{mediaId}
// [/{fileName}] and the legacy /_matrix/media/v3/download (req is nil there).
func (a *API) download(w http.ResponseWriter, r *http.Request, _ *Requester) error {
	v := routeVars(r)
	serverName, mediaID := v["serverName"], v["mediaId"]
	if err := checkMXC(serverName, mediaID); err != nil {
		return err
	}
	q := r.URL.Query()
	wait, err := waitParam(q)
	if err != nil {
		return err
	}
	m, err := a.resolveMedia(r.Context(), serverName, mediaID, allowRemoteParam(q), wait)
	if err != nil {
		return err
	}
	name := m.UploadName
	if fn, ok := v["fileName"]; ok {
		// The file name in the path replaces the stored one.
		name = cleanFilename(fn)
	}
	return a.serveContent(w, r, &content{sha: m.SHA256, contentType: contentTypeOr(m.ContentType), filename: name})
}

func contentTypeOr(ct string) string {
	if ct == "" {
		return "application/octet-stream"
	}
	return ct
}

// allowRemoteParam reads allow_remote (default true).
func allowRemoteParam(q url.Values) bool {
	return q.Get("allow_remote") != "false"
}

// waitParam reads timeout_ms: how long to wait for content not uploaded yet
// (default 20 s, capped at 60 s as the spec lets servers do).
func waitParam(q url.Values) (time.Duration, error) {
	s := q.Get("timeout_ms")
	if s == "" {
		return defaultWait, nil
	}
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil || ms < 0 {
		return 0, httputil.InvalidParam("timeout_ms must be a non-negative integer")
	}
	if ms > maxWait.Milliseconds() {
		return maxWait, nil
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// resolveMedia finds the media behind an mxc:// URI: local media (waiting up to
// wait for a pending asynchronous upload), or remote media from the cache or
// fetched from its origin server when allowRemote.
func (a *API) resolveMedia(ctx context.Context, serverName, mediaID string, allowRemote bool, wait time.Duration) (*mediaRow, error) {
	if serverName == a.serverName {
		return a.localMedia(ctx, mediaID, wait)
	}
	m, err := a.mdb.media(ctx, serverName, mediaID)
	if err != nil {
		return nil, internalErr(err)
	}
	if m != nil && !m.pending() {
		if m.Quarantined {
			return nil, httputil.NotFound("Media not found")
		}
		return m, nil
	}
	if !allowRemote {
		return nil, httputil.NotFound("Media not found (remote media not fetched: allow_remote=false)")
	}
	return a.fetchRemoteMedia(ctx, serverName, mediaID)
}

// localMedia loads media uploaded here, waiting up to wait for pending content
// (Client-Server API: 504 M_NOT_YET_UPLOADED when it does not arrive in time).
func (a *API) localMedia(ctx context.Context, mediaID string, wait time.Duration) (*mediaRow, error) {
	deadline := time.Now().Add(wait)
	for {
		m, err := a.mdb.media(ctx, a.serverName, mediaID)
		if err != nil {
			return nil, internalErr(err)
		}
		if m == nil || m.Quarantined || (m.pending() && m.ExpiresTS <= nowMS()) {
			return nil, httputil.NotFound("Media not found")
		}
		if !m.pending() {
			return m, nil
		}
		left := time.Until(deadline)
		if left <= 0 || ctx.Err() != nil {
			return nil, errNotYetUploaded
		}
		// The wake-up comes from this process's upload handler; the cap on each
		// wait re-reads the database in case another process took the upload.
		a.uploads.wait(ctx, a.serverName+"/"+mediaID, min(left, 2*time.Second))
	}
}

// errMissingFile is answered when a row points at a file that is gone (removed
// from disk by hand): logged, and a 404 for the client.
func errMissingFile(sha string) error {
	slog.Error("media file missing from storage", "sha256", sha)
	return httputil.NotFound("Media not found")
}
