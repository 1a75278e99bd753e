package mediaapi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"hearth/httputil"
)

// thumbSpec is a thumbnail request: the desired size and the method.
type thumbSpec struct {
	W, H   int
	Method string
}

const (
	methodCrop  = "crop"
	methodScale = "scale"
)

// standardThumbnails are the sizes the spec asks servers to produce (Client-Server
// API, "Thumbnails"); they are made in the background after an image is uploaded.
var standardThumbnails = []thumbSpec{
	{32, 32, methodCrop},
	{96, 96, methodCrop},
	{320, 240, methodScale},
	{640, 480, methodScale},
	{800, 600, methodScale},
}

// maxOnDemandThumbnails bounds the non-standard thumbnails stored per piece of
// media; beyond it they are still made but not kept, so a client asking for every
// width from 801 to 5000 cannot fill the disk.
const maxOnDemandThumbnails = 16

// pickStandard returns the smallest standard thumbnail of the same method at
// least as large as the request on both sides, which then serves the request
// (servers must not return thumbnails smaller than asked for).
func pickStandard(req thumbSpec) (thumbSpec, bool) {
	for _, s := range standardThumbnails {
		if s.Method == req.Method && s.W >= req.W && s.H >= req.H {
			return s, true
		}
	}
	return thumbSpec{}, false
}

// thumbParams reads width, height and method. Sizes must be positive integers;
// very large ones are fine (the thumbnail never exceeds the image).
func thumbParams(q url.Values) (thumbSpec, error) {
	dim := func(name string) (int, error) {
		s := q.Get(name)
		if s == "" {
			return 0, httputil.MissingParam("Missing %s", name)
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			return 0, httputil.InvalidParam("%s must be a positive integer", name)
		}
		return int(min(n, 1<<20)), nil
	}
	w, err := dim("width")
	if err != nil {
		return thumbSpec{}, err
	}
	h, err := dim("height")
	if err != nil {
		return thumbSpec{}, err
	}
	m := q.Get("method")
	switch m {
	case "":
		m = methodScale
	case methodCrop, methodScale:
	default:
		return thumbSpec{}, httputil.InvalidParam("method must be crop or scale")
	}
	return thumbSpec{W: w, H: h, Method: m}, nil
}

// thumbnail answers GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}
// and the legacy /_matrix/media/v3/thumbnail (req is nil there). Remote media is
// fetched whole and thumbnailed here.
func (a *API) thumbnail(w http.ResponseWriter, r *http.Request, _ *Requester) error {
	v := routeVars(r)
	serverName, mediaID := v["serverName"], v["mediaId"]
	if err := checkMXC(serverName, mediaID); err != nil {
		return err
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
	m, err := a.resolveMedia(r.Context(), serverName, mediaID, allowRemoteParam(q), wait)
	if err != nil {
		return err
	}
	c, err := a.thumbnailFor(r.Context(), m, spec)
	if err != nil {
		return err
	}
	return a.serveContent(w, r, c)
}

// thumbnailFor finds or makes the thumbnail answering spec for media m.
func (a *API) thumbnailFor(ctx context.Context, m *mediaRow, spec thumbSpec) (*content, error) {
	remote := m.ServerName != a.serverName
	f, err := a.store.open(m.SHA256)
	if err != nil {
		return nil, errMissingFile(m.SHA256)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, internalErr(err)
	}
	info, err := probeImage(f, st.Size())
	f.Close()
	if err != nil {
		return nil, httputil.Unknown("Cannot generate thumbnails for this content")
	}
	if info.pixels() > a.cfg.Media.MaxImagePixels {
		// Client-Server API, "Security considerations": 413 for local content too
		// large to thumbnail, 502 for remote.
		if remote {
			return nil, remoteTooLarge("Content is too large to thumbnail")
		}
		return nil, httputil.TooLarge("Content is too large to thumbnail")
	}
	dw, dh := info.displaySize()
	if spec.W >= dw && spec.H >= dh && info.format.name != "gif" {
		// "When the content is smaller than the requested dimensions, servers
		// should return the original content." (GIFs are still re-rendered: the
		// original may be animated, which a thumbnail must not be unless asked.)
		return &content{sha: m.SHA256, contentType: info.ContentType(), filename: "thumbnail." + info.format.name, thumbnail: true}, nil
	}
	target, standard := pickStandard(spec)
	if !standard {
		// Sides beyond the image's change nothing in the result (see
		// thumbGeometry): clamped, they do not make distinct cache entries.
		target = thumbSpec{W: min(spec.W, dw), H: min(spec.H, dh), Method: spec.Method}
	}
	rows, err := a.mdb.thumbnails(ctx, m.ServerName, m.MediaID)
	if err != nil {
		return nil, internalErr(err)
	}
	for _, t := range rows {
		if t.Spec == target {
			return thumbContent(&t), nil
		}
	}
	key := fmt.Sprintf("%s/%s/%dx%d/%s", m.ServerName, m.MediaID, target.W, target.H, target.Method)
	specs := []thumbSpec{target}
	store := true
	if standard {
		// One decode makes every standard size still missing.
		key = m.ServerName + "/" + m.MediaID + "/standard"
		specs = missingStandard(rows)
	} else if len(rows)-countStandard(rows) >= maxOnDemandThumbnails {
		store = false
	}
	// The work is shared by concurrent requests for the same thumbnails and must
	// not be cut short by the first requester going away.
	res, err, _ := a.thumbGroup.Do(key, func() (any, error) {
		gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		return a.makeThumbnails(gctx, m, info, specs, store)
	})
	if err != nil {
		if errors.Is(err, errNotImage) {
			return nil, httputil.Unknown("Cannot generate thumbnails for this content")
		}
		return nil, internalErr(err)
	}
	for _, t := range res.([]*madeThumb) {
		if t.row.Spec == target {
			if t.data != nil {
				return &content{data: t.data, contentType: t.row.ContentType, filename: thumbName(t.row.ContentType), thumbnail: true, modTime: time.Now()}, nil
			}
			return thumbContent(&t.row), nil
		}
	}
	// Joined a generation started for a different set of sizes: by now the
	// thumbnail is stored.
	if rows, err = a.mdb.thumbnails(ctx, m.ServerName, m.MediaID); err != nil {
		return nil, internalErr(err)
	}
	for _, t := range rows {
		if t.Spec == target {
			return thumbContent(&t), nil
		}
	}
	return nil, internalErr(fmt.Errorf("thumbnail %v of %s/%s was not made", target, m.ServerName, m.MediaID))
}

func thumbContent(t *thumbRow) *content {
	return &content{sha: t.SHA256, contentType: t.ContentType, filename: thumbName(t.ContentType), thumbnail: true}
}

func thumbName(ct string) string {
	if ct == "image/jpeg" {
		return "thumbnail.jpg"
	}
	return "thumbnail.png"
}

func missingStandard(rows []thumbRow) []thumbSpec {
	var out []thumbSpec
	for _, s := range standardThumbnails {
		found := false
		for _, t := range rows {
			if t.Spec == s {
				found = true
				break
			}
		}
		if !found {
			out = append(out, s)
		}
	}
	return out
}

func countStandard(rows []thumbRow) int {
	n := 0
	for _, t := range rows {
		if isStandard(t.Spec) {
			n++
		}
	}
	return n
}

func isStandard(s thumbSpec) bool {
	for _, st := range standardThumbnails {
		if st == s {
			return true
		}
	}
	return false
}

// madeThumb is a rendered thumbnail: stored (row.SHA256 set) or only in memory.
type madeThumb struct {
	row  thumbRow
	data []byte
}

// makeThumbnails decodes the image once and renders, encodes and (when store)
// stores a thumbnail per spec. Decodes are bounded by thumbSem: each holds the
// whole image in memory.
func (a *API) makeThumbnails(ctx context.Context, m *mediaRow, info *imageInfo, specs []thumbSpec, store bool) ([]*madeThumb, error) {
	select {
	case a.thumbSem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	start := time.Now()
	imgs, err := func() ([]*madeThumb, error) {
		defer func() { <-a.thumbSem }()
		f, err := a.store.open(m.SHA256)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		src, err := decodeImage(bufio.NewReaderSize(f, 64<<10), info)
		if err != nil {
			return nil, err
		}
		rendered := renderThumbnails(src, info, specs)
		photo := isPhoto(src)
		out := make([]*madeThumb, len(specs))
		for i, img := range rendered {
			data, ct, err := encodeThumbnail(img, photo)
			if err != nil {
				return nil, err
			}
			out[i] = &madeThumb{row: thumbRow{Spec: specs[i], Width: img.Rect.Dx(), Height: img.Rect.Dy(), ContentType: ct, Size: int64(len(data))}, data: data}
		}
		return out, nil
	}()
	if err != nil {
		return nil, err
	}
	a.metrics.thumbnailTime.Observe(time.Since(start).Seconds())
	if !store {
		return imgs, nil
	}
	for _, t := range imgs {
		staged, err := a.store.stageBytes(t.data)
		if err != nil {
			return nil, err
		}
		t.row.SHA256 = staged.SHA256
		if err := a.store.commit(staged, func() error {
			return a.mdb.insertThumbnail(ctx, m.ServerName, m.MediaID, &t.row, nowMS())
		}); err != nil {
			return nil, err
		}
		t.data = nil
	}
	return imgs, nil
}

// queueThumbnails schedules the standard thumbnails of newly stored media when it
// looks like an image; when the queue is full they are made on first request.
func (a *API) queueThumbnails(m *mediaRow) {
	select {
	case a.pregen <- m:
	default:
	}
}

// pregenWorker makes queued standard thumbnails until Close.
func (a *API) pregenWorker() {
	defer a.bgWG.Done()
	for {
		select {
		case <-a.bgCtx.Done():
			return
		case m := <-a.pregen:
			if err := a.pregenerate(a.bgCtx, m); err != nil && a.bgCtx.Err() == nil {
				slog.Warn("pre-generating thumbnails", "mxc", mxcURI(m.ServerName, m.MediaID), "err", err)
			}
		}
	}
}

// pregenerate makes the missing standard thumbnails of m, if it is an image small
// enough to thumbnail.
func (a *API) pregenerate(ctx context.Context, m *mediaRow) error {
	f, err := a.store.open(m.SHA256)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	info, err := probeImage(f, st.Size())
	f.Close()
	if err != nil || info.pixels() > a.cfg.Media.MaxImagePixels {
		return nil // not an image, or too large: nothing to do
	}
	rows, err := a.mdb.thumbnails(ctx, m.ServerName, m.MediaID)
	if err != nil {
		return err
	}
	specs := missingStandard(rows)
	if len(specs) == 0 {
		return nil
	}
	_, err, _ = a.thumbGroup.Do(m.ServerName+"/"+m.MediaID+"/standard", func() (any, error) {
		return a.makeThumbnails(ctx, m, info, specs, true)
	})
	if errors.Is(err, errNotImage) {
		return nil
	}
	return err
}
