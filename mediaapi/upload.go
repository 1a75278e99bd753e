package mediaapi

import (
	"errors"
	"net/http"
	"time"

	"hearth/httputil"
)

// upload answers POST /_matrix/media/v3/upload (Client-Server API, "Content
// repository"): the body is the file, Content-Type its type, ?filename= its name.
func (a *API) upload(w http.ResponseWriter, r *http.Request, req Requester) error {
	staged, err := a.receive(w, r)
	if err != nil {
		return err
	}
	m := &mediaRow{
		ServerName:  a.serverName,
		MediaID:     newMediaID(),
		SHA256:      staged.SHA256,
		Size:        staged.Size,
		ContentType: cleanContentType(r.Header.Get("Content-Type")),
		UploadName:  cleanFilename(r.URL.Query().Get("filename")),
		UserID:      string(req.UserID),
		CreatedTS:   nowMS(),
	}
	err = a.store.commit(staged, func() error {
		_, err := a.mdb.insertMedia(r.Context(), m)
		return err
	})
	if err != nil {
		return internalErr(err)
	}
	a.uploaded(m)
	httputil.RespondJSON(w, http.StatusOK, map[string]string{"content_uri": mxcURI(m.ServerName, m.MediaID)})
	return nil
}

// createMXC answers POST /_matrix/media/v1/create: it reserves a media ID whose
// content comes later with PUT /_matrix/media/v3/upload/{serverName}/{mediaId}.
func (a *API) createMXC(w http.ResponseWriter, r *http.Request, req Requester) error {
	now := time.Now()
	m := &mediaRow{
		ServerName: a.serverName,
		MediaID:    newMediaID(),
		UserID:     string(req.UserID),
		CreatedTS:  now.UnixMilli(),
		ExpiresTS:  now.Add(pendingUploadLifetime).UnixMilli(),
	}
	ok, err := a.mdb.createPending(r.Context(), m, maxPendingUploads)
	if err != nil {
		return internalErr(err)
	}
	if !ok {
		// The spec asks for 429 M_LIMIT_EXCEEDED when a user has too many pending
		// uploads.
		return httputil.LimitExceeded(60_000)
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]any{
		"content_uri":       mxcURI(m.ServerName, m.MediaID),
		"unused_expires_at": m.ExpiresTS,
	})
	return nil
}

// uploadToMXC answers PUT /_matrix/media/v3/upload/{serverName}/{mediaId}.
func (a *API) uploadToMXC(w http.ResponseWriter, r *http.Request, req Requester) error {
	v := routeVars(r)
	serverName, mediaID := v["serverName"], v["mediaId"]
	if err := checkMXC(serverName, mediaID); err != nil {
		return err
	}
	if serverName != a.serverName {
		return httputil.NotFound("Media ID was not created on this server")
	}
	m, err := a.mdb.media(r.Context(), serverName, mediaID)
	switch {
	case err != nil:
		return internalErr(err)
	case m == nil:
		return httputil.NotFound("Unknown media ID")
	case m.UserID != string(req.UserID):
		return httputil.Forbidden("This media ID was created by another user")
	case !m.pending():
		return errCannotOverwrite
	case m.ExpiresTS <= nowMS():
		return httputil.NotFound("This media ID has expired")
	}
	staged, err := a.receive(w, r)
	if err != nil {
		return err
	}
	m.SHA256, m.Size = staged.SHA256, staged.Size
	m.ContentType = cleanContentType(r.Header.Get("Content-Type"))
	m.UploadName = cleanFilename(r.URL.Query().Get("filename"))
	won := false
	err = a.store.commit(staged, func() error {
		var err error
		won, err = a.mdb.completePending(r.Context(), m)
		return err
	})
	if err != nil {
		return internalErr(err)
	}
	if !won {
		return errCannotOverwrite
	}
	a.uploaded(m)
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}

// receive stages an upload body under media.max_upload_bytes. The server's
// request-body middleware leaves uploads alone, so this is their only limit: a
// declared Content-Length over it is refused before reading, and a body that turns
// out longer is cut off at the limit (Client-Server API: 413 M_TOO_LARGE).
func (a *API) receive(w http.ResponseWriter, r *http.Request) (*stagedBlob, error) {
	limit := a.cfg.Media.MaxUploadBytes
	if r.ContentLength > limit {
		return nil, httputil.TooLarge("Cannot upload files larger than %d bytes", limit)
	}
	// MaxBytesReader also tells the server to close the connection rather than
	// drain an oversized body.
	body := http.MaxBytesReader(w, r.Body, limit)
	staged, err := a.store.stage(body, limit)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.Is(err, errTooLarge) || errors.As(err, &mbe) {
			return nil, httputil.TooLarge("Cannot upload files larger than %d bytes", limit)
		}
		if errors.Is(err, errReading) {
			return nil, httputil.Unknown("Upload interrupted")
		}
		return nil, internalErr(err)
	}
	return staged, nil
}

// uploaded runs after content arrives for local media: it wakes downloads waiting
// for it, counts it, and queues images for thumbnailing.
func (a *API) uploaded(m *mediaRow) {
	a.uploads.done(m.ServerName + "/" + m.MediaID)
	a.metrics.uploads.Inc()
	a.metrics.uploadBytes.Add(float64(m.Size))
	a.queueThumbnails(m)
}
