package mediaapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/net/html"
	"golang.org/x/net/html/charset"

	"hearth/httputil"
)

const (
	// previewLifetime is how long a preview is served from the cache.
	previewLifetime = 24 * time.Hour
	// maxPreviewURLLen bounds the URL asked about (and the cache key).
	maxPreviewURLLen = 2048
	// maxOGValue bounds each OpenGraph value kept, in bytes.
	maxOGValue = 2000
	// maxOGKeys bounds the OpenGraph keys kept per page.
	maxOGKeys = 32
	// maxHTMLTokens bounds the tokens read looking for the page's <head>.
	maxHTMLTokens    = 50_000
	previewUserAgent = "Mozilla/5.0 (compatible; Hearth URL preview; Matrix homeserver)"
)

// newPreviewClient is the HTTP client of URL previews: no proxy (a proxy would
// hide the real destination from the address filter), every connection dialled
// through the filter, at most five redirects and only to http(s), one overall
// time limit.
func newPreviewClient(f *ipFilter, timeout time.Duration) *http.Client {
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            f.dialer().DialContext,
		TLSHandshakeTimeout:    10 * time.Second,
		ResponseHeaderTimeout:  timeout,
		MaxResponseHeaderBytes: 64 << 10,
		MaxIdleConns:           16,
		IdleConnTimeout:        30 * time.Second,
		ForceAttemptHTTP2:      true,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("too many redirects")
			}
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return fmt.Errorf("redirect to a %s URL refused", req.URL.Scheme)
			}
			return nil
		},
	}
}

// previewURL answers GET /_matrix/client/v1/media/preview_url (and the v3/r0
// aliases): the OpenGraph data of a web page, its image re-hosted as mxc://.
// The server fetches URLs chosen by users, so every fetch goes through the
// address filter of media.url_preview (loopback, private, link-local … denied
// unless allowed), within size and time limits; answers are cached.
func (a *API) previewURL(w http.ResponseWriter, r *http.Request, _ Requester) error {
	if !a.cfg.Media.URLPreview.Enabled {
		return httputil.Unrecognized("URL previews are disabled on this server")
	}
	raw := r.URL.Query().Get("url")
	if raw == "" {
		return httputil.MissingParam("Missing url")
	}
	u, err := parsePreviewURL(raw)
	if err != nil {
		return err
	}
	key := u.String()
	now := time.Now()
	if og, err := a.mdb.preview(r.Context(), key, now.UnixMilli()); err != nil {
		return internalErr(err)
	} else if og != nil {
		a.metrics.previews.WithLabelValues("cached").Inc()
		httputil.WriteJSONBytes(w, http.StatusOK, og)
		return nil
	}
	res, err, _ := a.previewGroup.Do(key, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), time.Duration(a.cfg.Media.RemoteTimeoutSeconds)*time.Second)
		defer cancel()
		og, err := a.fetchPreview(ctx, u)
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(og)
		if err != nil {
			return nil, err
		}
		if err := a.mdb.storePreview(ctx, key, b, now.UnixMilli(), now.Add(previewLifetime).UnixMilli()); err != nil {
			return nil, err
		}
		return b, nil
	})
	if err != nil {
		var me *httputil.Error
		switch {
		case errors.Is(err, errAddressBlocked):
			a.metrics.previews.WithLabelValues("blocked").Inc()
			return httputil.Forbidden("URL blocked: it leads to an address this server may not connect to")
		case errors.As(err, &me):
			a.metrics.previews.WithLabelValues("error").Inc()
			return err
		}
		a.metrics.previews.WithLabelValues("error").Inc()
		if isTimeout(err) {
			return &httputil.Error{Status: http.StatusGatewayTimeout, ErrCode: "M_UNKNOWN", Message: "Timed out fetching the URL"}
		}
		return badGateway("Could not fetch the URL")
	}
	a.metrics.previews.WithLabelValues("ok").Inc()
	httputil.WriteJSONBytes(w, http.StatusOK, res.([]byte))
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// parsePreviewURL accepts absolute http(s) URLs with a host, without the fragment.
func parsePreviewURL(raw string) (*url.URL, error) {
	if len(raw) > maxPreviewURLLen {
		return nil, httputil.InvalidParam("url is longer than %d bytes", maxPreviewURLLen)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return nil, httputil.InvalidParam("url must be an absolute http or https URL")
	}
	if u.User != nil {
		return nil, httputil.InvalidParam("url must not carry credentials")
	}
	u.Fragment, u.RawFragment = "", ""
	return u, nil
}

// fetchPreview fetches u and builds its preview.
func (a *API) fetchPreview(ctx context.Context, u *url.URL) (map[string]any, error) {
	resp, err := a.previewGet(ctx, u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	limit := a.cfg.Media.URLPreview.MaxBytes
	ct := resp.Header.Get("Content-Type")
	base := baseMediaType(ct)
	switch {
	case base == "text/html" || base == "application/xhtml+xml":
		// Only the first max_bytes are read: what a preview needs is in <head>.
		og := parseOpenGraph(io.LimitReader(resp.Body, limit), ct, resp.Request.URL)
		if img, ok := og["og:image"].(string); ok {
			delete(og, "og:image")
			if iu, err := url.Parse(img); err == nil && (iu.Scheme == "http" || iu.Scheme == "https") {
				// A page whose image cannot be had (blocked, too large, not an
				// image) is still previewed, without the image.
				_ = a.previewImage(ctx, iu, og)
			}
		}
		return og, nil
	case strings.HasPrefix(base, "image/"):
		og := map[string]any{}
		if err := a.storePreviewImage(resp, u, og); err != nil {
			return nil, err
		}
		return og, nil
	default:
		// Not a page or an image: nothing to show but its name.
		og := map[string]any{}
		if name := cleanFilename(path.Base(u.Path)); name != "" && name != "/" && name != "." {
			og["og:title"] = name
		}
		return og, nil
	}
}

// previewGet fetches a URL for a preview. The host is checked before connecting
// (for a clear error), and every address actually dialled, redirects included,
// is checked again by the dialer.
func (a *API) previewGet(ctx context.Context, u *url.URL) (*http.Response, error) {
	if err := a.previewFilter.checkHost(ctx, u.Hostname()); err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, httputil.InvalidParam("Invalid url")
	}
	req.Header.Set("User-Agent", previewUserAgent)
	req.Header.Set("Accept", "text/html,application/xhtml+xml;q=0.9,image/*;q=0.8,*/*;q=0.5")
	resp, err := a.preview.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, badGateway("The URL answered %s", resp.Status)
	}
	return resp, nil
}

// previewImage fetches a page's og:image and re-hosts it; failures leave og
// without an image.
func (a *API) previewImage(ctx context.Context, u *url.URL, og map[string]any) error {
	resp, err := a.previewGet(ctx, u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if !strings.HasPrefix(baseMediaType(resp.Header.Get("Content-Type")), "image/") {
		return errNotImage
	}
	return a.storePreviewImage(resp, u, og)
}

// storePreviewImage stores an image answer as local media and describes it in og
// (og:image as mxc://, matrix:image:size, og:image:type/width/height).
func (a *API) storePreviewImage(resp *http.Response, u *url.URL, og map[string]any) error {
	limit := a.cfg.Media.URLPreview.MaxBytes
	if resp.ContentLength > limit {
		return remoteTooLarge("The image is larger than %d bytes", limit)
	}
	staged, err := a.store.stage(resp.Body, limit)
	if errors.Is(err, errTooLarge) {
		return remoteTooLarge("The image is larger than %d bytes", limit)
	}
	if err != nil {
		return fmt.Errorf("receiving preview image: %w", err)
	}
	f, err := os.Open(staged.tmp)
	if err != nil {
		a.store.discard(staged)
		return err
	}
	info, err := probeImage(f, staged.Size)
	f.Close()
	if err != nil {
		a.store.discard(staged)
		return err
	}
	m := &mediaRow{
		ServerName:  a.serverName,
		MediaID:     newMediaID(),
		SHA256:      staged.SHA256,
		Size:        staged.Size,
		ContentType: info.ContentType(),
		UploadName:  cleanFilename(path.Base(u.Path)),
		CreatedTS:   nowMS(),
	}
	if err := a.store.commit(staged, func() error {
		_, err := a.mdb.insertMedia(context.Background(), m)
		return err
	}); err != nil {
		return err
	}
	a.queueThumbnails(m)
	dw, dh := info.displaySize()
	og["og:image"] = mxcURI(m.ServerName, m.MediaID)
	og["og:image:type"] = m.ContentType
	og["og:image:width"] = dw
	og["og:image:height"] = dh
	og["matrix:image:size"] = m.Size
	return nil
}

// parseOpenGraph reads the <head> of an HTML page (in any charset it declares)
// for OpenGraph <meta property="og:…"> tags, falling back to <title> and
// <meta name="description">. Relative og:image URLs are resolved against base.
func parseOpenGraph(r io.Reader, contentType string, base *url.URL) map[string]any {
	if cr, err := charset.NewReader(r, contentType); err == nil {
		r = cr
	}
	z := html.NewTokenizer(r)
	z.SetMaxBuf(256 << 10)
	og := map[string]any{}
	var title strings.Builder
	var description string
	inTitle := false
loop:
	for range maxHTMLTokens {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			break loop
		case html.StartTagToken, html.SelfClosingTagToken:
			name, hasAttr := z.TagName()
			switch string(name) {
			case "meta":
				if !hasAttr {
					continue
				}
				var prop, content string
				hasContent := false
				for {
					k, v, more := z.TagAttr()
					switch string(k) {
					case "property", "name":
						if prop == "" {
							prop = strings.ToLower(strings.TrimSpace(string(v)))
						}
					case "content":
						content, hasContent = string(v), true
					}
					if !more {
						break
					}
				}
				if !hasContent {
					continue
				}
				switch {
				case strings.HasPrefix(prop, "og:") && len(og) < maxOGKeys:
					if _, seen := og[prop]; !seen {
						og[prop] = clip(content)
					}
				case prop == "description" && description == "":
					description = clip(content)
				}
			case "title":
				inTitle = tt == html.StartTagToken && title.Len() == 0
			case "body":
				break loop
			}
		case html.TextToken:
			if inTitle && title.Len() < maxOGValue {
				title.Write(z.Text())
			}
		case html.EndTagToken:
			switch name, _ := z.TagName(); string(name) {
			case "title":
				inTitle = false
			case "head":
				break loop
			}
		}
	}
	if _, ok := og["og:title"]; !ok {
		if t := strings.Join(strings.Fields(title.String()), " "); t != "" {
			og["og:title"] = clip(t)
		}
	}
	if _, ok := og["og:description"]; !ok && description != "" {
		og["og:description"] = description
	}
	if img, ok := og["og:image"].(string); ok {
		if iu, err := base.Parse(strings.TrimSpace(img)); err == nil {
			og["og:image"] = iu.String()
		} else {
			delete(og, "og:image")
		}
	}
	return og
}

// clip trims s and cuts it to maxOGValue bytes on a rune boundary.
func clip(s string) string {
	s = strings.TrimSpace(s)
	if len(s) <= maxOGValue {
		return s
	}
	s = s[:maxOGValue]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
