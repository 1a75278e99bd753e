package mediaapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/federation"

	"hearth/httputil"
)

// legacyMediaPath is a /_matrix/media/v3 path for mautrix's federation client
// (whose own paths all start with /_matrix/federation).
type legacyMediaPath []any

func (p legacyMediaPath) FullPath() []any { return append([]any{"_matrix", "media", "v3"}, p...) }

// remoteBody is the content of a remote download being received.
type remoteBody struct {
	body        io.ReadCloser
	contentType string
	filename    string
	length      int64 // -1 when unknown
}

// fetchRemoteMedia downloads remote media from its origin server, stores it and
// records it, once however many requests ask for it at the same time
// (Server-Server API, "Content Repository").
func (a *API) fetchRemoteMedia(ctx context.Context, serverName, mediaID string) (*mediaRow, error) {
	if a.fed == nil {
		return nil, httputil.NotFound("Media not found (federation is disabled on this server)")
	}
	res, err, _ := a.fetchGroup.Do(serverName+"/"+mediaID, func() (any, error) {
		// Shared by every waiting request: not tied to the first one's lifetime.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Duration(a.cfg.Media.RemoteTimeoutSeconds)*time.Second)
		defer cancel()
		m, err := a.fetchAndStore(fctx, serverName, mediaID)
		a.metrics.remoteFetches.WithLabelValues(fetchResult(err)).Inc()
		if err != nil {
			var me *httputil.Error
			if !errors.As(err, &me) {
				slog.Warn("fetching remote media failed", "mxc", mxcURI(serverName, mediaID), "err", err)
				return nil, badGateway("Could not fetch the media from %s", serverName)
			}
			return nil, err
		}
		return m, nil
	})
	if err != nil {
		return nil, err
	}
	return res.(*mediaRow), nil
}

func fetchResult(err error) string {
	var me *httputil.Error
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &me) && me.Status == http.StatusNotFound:
		return "not_found"
	case errors.As(err, &me) && me.ErrCode == "M_TOO_LARGE":
		return "too_large"
	}
	return "error"
}

func (a *API) fetchAndStore(ctx context.Context, serverName, mediaID string) (*mediaRow, error) {
	rb, err := a.fetchFederation(ctx, serverName, mediaID)
	if errors.Is(err, errTryLegacy) {
		rb, err = a.fetchLegacy(ctx, serverName, mediaID)
	}
	if err != nil {
		return nil, err
	}
	defer rb.body.Close()
	limit := a.cfg.Media.RemoteMaxBytes
	if rb.length > limit {
		return nil, remoteTooLarge("Remote media is larger than %d bytes", limit)
	}
	staged, err := a.store.stage(rb.body, limit)
	if errors.Is(err, errTooLarge) {
		return nil, remoteTooLarge("Remote media is larger than %d bytes", limit)
	}
	if err != nil {
		return nil, fmt.Errorf("receiving remote media: %w", err)
	}
	m := &mediaRow{
		ServerName:  serverName,
		MediaID:     mediaID,
		SHA256:      staged.SHA256,
		Size:        staged.Size,
		ContentType: cleanContentType(rb.contentType),
		UploadName:  cleanFilename(rb.filename),
		CreatedTS:   nowMS(),
	}
	err = a.store.commit(staged, func() error {
		_, err := a.mdb.insertMedia(ctx, m)
		return err
	})
	if err != nil {
		return nil, err
	}
	// Another process may have recorded it first; serve what the table says.
	if stored, err := a.mdb.media(ctx, serverName, mediaID); err == nil && stored != nil && !stored.pending() {
		m = stored
	}
	a.queueThumbnails(m)
	return m, nil
}

// errTryLegacy means the remote server does not have the federation media
// endpoints; the deprecated /_matrix/media/v3/download is tried instead.
var errTryLegacy = errors.New("federation media endpoint not supported")

// fetchFederation asks GET /_matrix/federation/v1/media/download/{mediaId}, signed.
func (a *API) fetchFederation(ctx context.Context, serverName, mediaID string) (*remoteBody, error) {
	_, resp, err := a.fed.MakeFullRequest(ctx, federation.RequestParams{
		ServerName:   serverName,
		Method:       http.MethodGet,
		Path:         federation.URLPath{"v1", "media", "download", mediaID},
		Query:        url.Values{"timeout_ms": {"20000"}},
		Authenticate: true,
		DontReadBody: true,
	})
	if err != nil {
		if status, code := remoteErr(err); endpointMissing(status, code) {
			return nil, errTryLegacy
		}
		return nil, mapRemoteErr(err, serverName)
	}
	rb, err := a.readMultipart(ctx, resp)
	if err != nil {
		resp.Body.Close()
		return nil, fmt.Errorf("reading media from %s: %w", serverName, err)
	}
	return rb, nil
}

// endpointMissing tells "no such endpoint" from "no such media": servers answer
// unknown endpoints with M_UNRECOGNIZED (404 or 405) and unknown media with 404
// M_NOT_FOUND. A 400 without a Matrix error body did not come from an
// implementation of the endpoint either (a proxy, or a server that routes the
// path elsewhere), so the legacy endpoint is worth a try then too.
func endpointMissing(status int, code string) bool {
	switch status {
	case http.StatusNotFound:
		return code != "M_NOT_FOUND"
	case http.StatusBadRequest:
		return code == "M_UNRECOGNIZED" || code == ""
	case http.StatusMethodNotAllowed, http.StatusNotImplemented:
		return true
	}
	return false
}

// remoteErr extracts the HTTP status and errcode of a failed request.
func remoteErr(err error) (int, string) {
	var he mautrix.HTTPError
	if !errors.As(err, &he) || he.Response == nil {
		return 0, ""
	}
	code := ""
	if he.RespError != nil {
		code = he.RespError.ErrCode
	}
	return he.Response.StatusCode, code
}

// mapRemoteErr turns a remote server's answer into ours: not found stays not
// found, not yet uploaded stays so, too large is 502 M_TOO_LARGE, anything else
// (unreachable, filtered address, 5xx) is a 502.
func mapRemoteErr(err error, serverName string) error {
	status, code := remoteErr(err)
	switch {
	case status == http.StatusNotFound:
		return httputil.NotFound("Media not found on %s", serverName)
	case status == http.StatusGatewayTimeout && code == "M_NOT_YET_UPLOADED":
		return errNotYetUploaded
	case code == "M_TOO_LARGE":
		return remoteTooLarge("Remote media is too large")
	}
	if errors.Is(err, errAddressBlocked) || errors.Is(err, federation.ErrIPFiltered) {
		return badGateway("%s resolves to an address this server may not connect to", serverName)
	}
	return fmt.Errorf("fetching media from %s: %w", serverName, err)
}

// readMultipart reads the federation download answer: a JSON part, then the
// content or a Location to fetch it from.
func (a *API) readMultipart(ctx context.Context, resp *http.Response) (*remoteBody, error) {
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		return nil, fmt.Errorf("expected multipart/mixed with a boundary, got %q", resp.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	meta, err := mr.NextPart()
	if err != nil {
		return nil, fmt.Errorf("reading metadata part: %w", err)
	}
	var obj map[string]json.RawMessage
	if err := json.NewDecoder(io.LimitReader(meta, 64<<10)).Decode(&obj); err != nil {
		return nil, fmt.Errorf("metadata part is not a JSON object: %w", err)
	}
	part, err := mr.NextPart()
	if err != nil {
		return nil, fmt.Errorf("reading content part: %w", err)
	}
	if loc := part.Header.Get("Location"); loc != "" {
		resp.Body.Close()
		return a.fetchRedirect(ctx, loc)
	}
	_, dispParams, _ := mime.ParseMediaType(part.Header.Get("Content-Disposition"))
	return &remoteBody{
		body:        &partBody{part: part, resp: resp.Body},
		contentType: part.Header.Get("Content-Type"),
		filename:    dispParams["filename"],
		length:      -1,
	}, nil
}

// partBody reads a multipart part and closes the response under it.
type partBody struct {
	part *multipart.Part
	resp io.Closer
}

func (p *partBody) Read(b []byte) (int, error) { return p.part.Read(b) }
func (p *partBody) Close() error               { p.part.Close(); return p.resp.Close() }

// fetchRedirect follows a Location given instead of content. Only https URLs are
// followed, through the address-filtered client.
func (a *API) fetchRedirect(ctx context.Context, loc string) (*remoteBody, error) {
	u, err := url.Parse(loc)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("refusing media redirect to %q: only https URLs are followed", loc)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := a.fed.ExtHTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("following media redirect: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("media redirect answered %s", resp.Status)
	}
	return bodyOf(resp), nil
}

func bodyOf(resp *http.Response) *remoteBody {
	_, dispParams, _ := mime.ParseMediaType(resp.Header.Get("Content-Disposition"))
	return &remoteBody{body: resp.Body, contentType: resp.Header.Get("Content-Type"), filename: dispParams["filename"], length: resp.ContentLength}
}

// fetchLegacy asks the deprecated GET /_matrix/media/v3/download/{serverName}/
// {mediaId} of servers older than Matrix 1.11, with allow_remote=false so that
// two servers can never bounce a request between them.
func (a *API) fetchLegacy(ctx context.Context, serverName, mediaID string) (*remoteBody, error) {
	_, resp, err := a.fed.MakeFullRequest(ctx, federation.RequestParams{
		ServerName:   serverName,
		Method:       http.MethodGet,
		Path:         legacyMediaPath{"download", serverName, mediaID},
		Query:        url.Values{"allow_remote": {"false"}, "allow_redirect": {"true"}, "timeout_ms": {"20000"}},
		DontReadBody: true,
	})
	if err != nil {
		var he mautrix.HTTPError
		if errors.As(err, &he) && he.Response != nil {
			switch he.Response.StatusCode {
			case http.StatusTemporaryRedirect, http.StatusPermanentRedirect, http.StatusFound, http.StatusMovedPermanently:
				if loc := he.Response.Header.Get("Location"); loc != "" {
					return a.fetchRedirect(ctx, loc)
				}
			}
		}
		return nil, mapRemoteErr(err, serverName)
	}
	return bodyOf(resp), nil
}
