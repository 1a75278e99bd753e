package mediaapi_test

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/png"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"hearth/config"
	"hearth/internal/testserver"
	"hearth/storage/storagetest"
)

// TestUploadDownload: what is uploaded comes back byte for byte, with safe
// headers, Range support, file name override, and identical contents stored once.
func TestUploadDownload(t *testing.T) {
	var dir string
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := register(t, s, "alice")
		data := randomBytes(1<<20 + 123)
		server, id := alice.upload(data, "application/octet-stream", "family%20photos.bin")
		if server != "hs.test" {
			t.Fatalf("server name %q", server)
		}
		get := alice.do("GET", clientMedia+"/download/"+server+"/"+id, nil).expect(t, 200, "")
		if !bytes.Equal(get.body, data) {
			t.Fatalf("downloaded %d bytes differ from the %d uploaded", len(get.body), len(data))
		}
		for h, want := range map[string]string{
			"Content-Type":                 "application/octet-stream",
			"Content-Disposition":          `attachment; filename="family photos.bin"`,
			"X-Content-Type-Options":       "nosniff",
			"Cross-Origin-Resource-Policy": "cross-origin",
		} {
			if got := get.header.Get(h); got != want {
				t.Errorf("%s = %q, want %q", h, got, want)
			}
		}
		if csp := get.header.Get("Content-Security-Policy"); !strings.HasPrefix(csp, "sandbox;") || !strings.Contains(csp, "default-src 'none'") {
			t.Errorf("Content-Security-Policy = %q", csp)
		}

		// The name in the path replaces the stored one.
		named := alice.do("GET", clientMedia+"/download/"+server+"/"+id+"/other.txt", nil).expect(t, 200, "")
		if got := named.header.Get("Content-Disposition"); got != "attachment; filename=other.txt" {
			t.Errorf("override disposition %q", got)
		}

		// Range requests.
		part := alice.do("GET", clientMedia+"/download/"+server+"/"+id, nil, "Range", "bytes=1000-1999").expect(t, http.StatusPartialContent, "")
		if !bytes.Equal(part.body, data[1000:2000]) || part.header.Get("Content-Range") != fmt.Sprintf("bytes 1000-1999/%d", len(data)) {
			t.Fatalf("range: %d bytes, Content-Range %q", len(part.body), part.header.Get("Content-Range"))
		}
		tail := alice.do("GET", clientMedia+"/download/"+server+"/"+id, nil, "Range", "bytes=-10").expect(t, http.StatusPartialContent, "")
		if !bytes.Equal(tail.body, data[len(data)-10:]) {
			t.Fatal("suffix range differs")
		}
		alice.do("GET", clientMedia+"/download/"+server+"/"+id, nil, "Range", fmt.Sprintf("bytes=%d-", len(data)+5)).expect(t, http.StatusRequestedRangeNotSatisfiable, "")
		// A cached copy is revalidated by ETag.
		alice.do("GET", clientMedia+"/download/"+server+"/"+id, nil, "If-None-Match", get.header.Get("ETag")).expect(t, http.StatusNotModified, "")
		head := alice.do("HEAD", clientMedia+"/download/"+server+"/"+id, nil).expect(t, 200, "")
		if head.header.Get("Content-Length") != fmt.Sprint(len(data)) || len(head.body) != 0 {
			t.Fatalf("HEAD: Content-Length %q, %d body bytes", head.header.Get("Content-Length"), len(head.body))
		}

		// Only the safe list is served inline; HTML never is.
		var pngBuf bytes.Buffer
		_ = png.Encode(&pngBuf, solid(8, 8, color.White))
		_, pngID := alice.upload(pngBuf.Bytes(), "image/png", "dot.png")
		if got := alice.do("GET", clientMedia+"/download/hs.test/"+pngID, nil).header.Get("Content-Disposition"); got != "inline; filename=dot.png" {
			t.Errorf("png disposition %q", got)
		}
		_, htmlID := alice.upload([]byte("<script>alert(1)</script>"), "text/html", "")
		h := alice.do("GET", clientMedia+"/download/hs.test/"+htmlID, nil).expect(t, 200, "")
		if h.header.Get("Content-Disposition") != "attachment" || h.header.Get("Content-Type") != "text/html" {
			t.Errorf("html served as %q, %q", h.header.Get("Content-Type"), h.header.Get("Content-Disposition"))
		}

		// No Content-Type: application/octet-stream. r0 is an alias of v3.
		r0 := alice.do("POST", "/_matrix/media/r0/upload", []byte("r0 bytes")).expect(t, 200, "")
		_, r0ID := splitMXC(t, r0.str("content_uri"))
		if got := alice.do("GET", clientMedia+"/download/hs.test/"+r0ID, nil); string(got.body) != "r0 bytes" || got.header.Get("Content-Type") != "application/octet-stream" {
			t.Fatalf("r0 upload: %s, %q", got, got.header.Get("Content-Type"))
		}

		// Identical contents are stored once, under different media IDs.
		before := blobFiles(t, dir)
		_, id2 := alice.upload(data, "application/octet-stream", "copy.bin")
		if id2 == id {
			t.Fatal("second upload got the same media ID")
		}
		if after := blobFiles(t, dir); after != before {
			t.Fatalf("re-uploading identical content added files: %d -> %d", before, after)
		}
		if got := alice.do("GET", clientMedia+"/download/hs.test/"+id2, nil); !bytes.Equal(got.body, data) {
			t.Fatal("deduplicated copy differs")
		}

		for _, p := range []string{clientMedia + "/config", legacyMedia + "/config", "/_matrix/media/r0/config"} {
			cfg := alice.do("GET", p, nil).expect(t, 200, "")
			if cfg.json()["m.upload.size"] != float64(50<<20) {
				t.Errorf("%s: %s", p, cfg)
			}
		}
	}, func(c *config.Config) { dir = c.Media.StoragePath })
}

// TestAuthenticatedMedia: the client v1 endpoints need an access token (401
// otherwise); the legacy unauthenticated ones are off by default and on when
// configured.
func TestAuthenticatedMedia(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := register(t, s, "alice")
		_, id := alice.upload([]byte("secret family photo"), "image/jpeg", "")
		nobody, bad := anon(t, s), &client{t: t, base: s.URL, token: "not-a-token"}
		for _, p := range []string{
			clientMedia + "/download/hs.test/" + id,
			clientMedia + "/download/hs.test/" + id + "/x.jpg",
			clientMedia + "/thumbnail/hs.test/" + id + "?width=32&height=32",
			clientMedia + "/config",
			clientMedia + "/preview_url?url=https://example.org",
		} {
			nobody.do("GET", p, nil).expect(t, 401, "M_MISSING_TOKEN")
			bad.do("GET", p, nil).expect(t, 401, "M_UNKNOWN_TOKEN")
		}
		// Authentication comes before path checks: a malformed media path (here
		// an MXC URI where the media ID goes) or a wrong method is 401 without
		// a token, 404/405 with one.
		malformed := clientMedia + "/download/hs.test/" + url.PathEscape("mxc://hs.test/"+id)
		nobody.do("GET", malformed, nil).expect(t, 401, "M_MISSING_TOKEN")
		alice.do("GET", malformed, nil).expect(t, 404, "")
		nobody.do("GET", clientMedia+"/nonsense", nil).expect(t, 401, "M_MISSING_TOKEN")
		nobody.do("DELETE", clientMedia+"/download/hs.test/"+id, nil).expect(t, 401, "M_MISSING_TOKEN")
		alice.do("DELETE", clientMedia+"/download/hs.test/"+id, nil).expect(t, 405, "")
		nobody.do("POST", legacyMedia+"/upload", []byte("x")).expect(t, 401, "M_MISSING_TOKEN")
		nobody.do("POST", "/_matrix/media/v1/create", nil).expect(t, 401, "M_MISSING_TOKEN")
		// Legacy endpoints are frozen by default, even with a token.
		for _, c := range []*client{nobody, alice} {
			c.do("GET", legacyMedia+"/download/hs.test/"+id, nil).expect(t, 404, "M_NOT_FOUND")
			c.do("GET", "/_matrix/media/r0/thumbnail/hs.test/"+id+"?width=32&height=32", nil).expect(t, 404, "M_NOT_FOUND")
		}
	})
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := register(t, s, "alice")
		_, id := alice.upload([]byte("old client"), "text/plain", "a.txt")
		nobody := anon(t, s)
		for _, p := range []string{legacyMedia + "/download/hs.test/" + id, "/_matrix/media/r0/download/hs.test/" + id + "/b.txt"} {
			if got := nobody.do("GET", p, nil).expect(t, 200, ""); string(got.body) != "old client" {
				t.Fatalf("%s: %s", p, got)
			}
		}
		// Still authenticated on the client v1 paths.
		nobody.do("GET", clientMedia+"/download/hs.test/"+id, nil).expect(t, 401, "M_MISSING_TOKEN")
	}, mediaOpt(func(m *config.Media) { m.LegacyUnauthenticated = true }))
}

// TestUploadTooLarge: over media.max_upload_bytes is 413 M_TOO_LARGE, whether the
// length is declared or the body is streamed.
func TestUploadTooLarge(t *testing.T) {
	const limit = 64 << 10
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := register(t, s, "alice")
		alice.do("POST", legacyMedia+"/upload", randomBytes(limit+1)).expect(t, 413, "M_TOO_LARGE")
		// Unknown length (chunked): cut off at the limit.
		alice.do("POST", legacyMedia+"/upload", io.MultiReader(bytes.NewReader(randomBytes(limit)), strings.NewReader("!"))).expect(t, 413, "M_TOO_LARGE")
		alice.do("POST", legacyMedia+"/upload", io.MultiReader(bytes.NewReader(randomBytes(limit)))).expect(t, 200, "")
		alice.do("POST", legacyMedia+"/upload", randomBytes(limit)).expect(t, 200, "")
		create := alice.do("POST", "/_matrix/media/v1/create", nil).expect(t, 200, "")
		_, id := splitMXC(t, create.str("content_uri"))
		alice.do("PUT", legacyMedia+"/upload/hs.test/"+id, randomBytes(limit+1)).expect(t, 413, "M_TOO_LARGE")
		if got := alice.do("GET", clientMedia+"/config", nil).json()["m.upload.size"]; got != float64(limit) {
			t.Fatalf("m.upload.size = %v", got)
		}
	}, mediaOpt(func(m *config.Media) { m.MaxUploadBytes = limit }))
}

// TestAsyncUpload: /create reserves an mxc:// URI; downloads wait for the content
// (or give 504 M_NOT_YET_UPLOADED); only the creator may upload, once.
func TestAsyncUpload(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice, bob := register(t, s, "alice"), register(t, s, "bob")
		create := alice.do("POST", "/_matrix/media/v1/create", nil).expect(t, 200, "")
		if exp, _ := create.json()["unused_expires_at"].(float64); int64(exp) < time.Now().Add(23*time.Hour).UnixMilli() {
			t.Fatalf("unused_expires_at %v", create.json()["unused_expires_at"])
		}
		server, id := splitMXC(t, create.str("content_uri"))
		dl := clientMedia + "/download/" + server + "/" + id
		bob.do("GET", dl+"?timeout_ms=50", nil).expect(t, 504, "M_NOT_YET_UPLOADED")
		bob.do("PUT", legacyMedia+"/upload/"+server+"/"+id, []byte("mine now")).expect(t, 403, "M_FORBIDDEN")

		var wg sync.WaitGroup
		var waited resp
		wg.Add(1)
		go func() {
			defer wg.Done()
			waited = bob.do("GET", dl+"?timeout_ms=10000", nil)
		}()
		time.Sleep(100 * time.Millisecond)
		alice.do("PUT", legacyMedia+"/upload/"+server+"/"+id+"?filename=late.txt", []byte("arrived later"), "Content-Type", "text/plain").expect(t, 200, "")
		wg.Wait()
		if waited.status != 200 || string(waited.body) != "arrived later" {
			t.Fatalf("waiting download: %s", waited)
		}
		if got := waited.header.Get("Content-Disposition"); got != "inline; filename=late.txt" {
			t.Errorf("disposition %q", got)
		}
		alice.do("PUT", legacyMedia+"/upload/"+server+"/"+id, []byte("again")).expect(t, 409, "M_CANNOT_OVERWRITE_MEDIA")
		alice.do("PUT", legacyMedia+"/upload/"+server+"/unknownID", []byte("x")).expect(t, 404, "M_NOT_FOUND")
		alice.do("PUT", legacyMedia+"/upload/other.server/"+id, []byte("x")).expect(t, 404, "M_NOT_FOUND")
		alice.do("PUT", legacyMedia+"/upload/"+server+"/bad.id", []byte("x")).expect(t, 400, "M_INVALID_PARAM")
	})
}

// decodeThumb decodes a thumbnail response, checking its headers.
func decodeThumb(t *testing.T, r resp) image.Image {
	t.Helper()
	ct := r.header.Get("Content-Type")
	if ct != "image/jpeg" && ct != "image/png" {
		t.Fatalf("thumbnail Content-Type %q", ct)
	}
	if d := r.header.Get("Content-Disposition"); !strings.HasPrefix(d, "inline") {
		t.Fatalf("thumbnail Content-Disposition %q", d)
	}
	img, format, err := image.Decode(bytes.NewReader(r.body))
	if err != nil {
		t.Fatalf("thumbnail does not decode: %v", err)
	}
	if "image/"+format != ct {
		t.Fatalf("thumbnail is %s but says %s", format, ct)
	}
	return img
}

// TestThumbnails: a 4000×3000 JPEG gets thumbnails no larger than asked for (crop:
// exactly the size asked for), standard and on-demand; small images come back as
// they are; PNG, GIF and WebP sources work; EXIF orientation is applied; images
// over media.max_image_pixels are refused with 413 before being decoded.
func TestThumbnails(t *testing.T) {
	big := photo(t, 4000, 3000)
	var dir string
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := register(t, s, "alice")
		// The standard sizes are made in the background after upload: the image
		// plus five thumbnails appear on disk without any thumbnail request.
		alice.upload(photo(t, 1000, 750), "image/jpeg", "")
		for deadline := time.Now().Add(30 * time.Second); blobFiles(t, dir) < 6; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("standard thumbnails were not pre-generated: %d files", blobFiles(t, dir))
			}
		}
		_, id := alice.upload(big, "image/jpeg", "big.jpg")
		for _, tc := range []struct {
			w, h   int
			method string
			want   [2]int
			// fits: the thumbnail is no larger than asked for (standard and
			// on-demand sizes); otherwise the next larger standard size serves.
			fits bool
		}{
			{320, 240, "scale", [2]int{320, 240}, true},
			{640, 480, "scale", [2]int{640, 480}, true},
			{800, 600, "scale", [2]int{800, 600}, true},
			{96, 96, "crop", [2]int{96, 96}, true},
			{32, 32, "crop", [2]int{32, 32}, true},
			{1000, 1000, "scale", [2]int{1000, 750}, true}, // on demand
			{500, 100, "crop", [2]int{500, 100}, true},     // on demand
			{300, 300, "", [2]int{640, 480}, false},        // scale by default; 320×240 would be too small
			{50, 50, "crop", [2]int{96, 96}, false},
		} {
			q := fmt.Sprintf("?width=%d&height=%d", tc.w, tc.h)
			if tc.method != "" {
				q += "&method=" + tc.method
			}
			r := alice.do("GET", clientMedia+"/thumbnail/hs.test/"+id+q, nil).expect(t, 200, "")
			b := decodeThumb(t, r).Bounds()
			if got := [2]int{b.Dx(), b.Dy()}; got != tc.want {
				t.Errorf("%dx%d %s: got %v, want %v", tc.w, tc.h, tc.method, got, tc.want)
			}
			if tc.fits && (b.Dx() > tc.w || b.Dy() > tc.h) {
				t.Errorf("%dx%d %s: %v exceeds the request", tc.w, tc.h, tc.method, b)
			}
			// Never smaller than asked on both sides (the image is larger).
			if b.Dx() < tc.w && b.Dy() < tc.h {
				t.Errorf("%dx%d %s: %v is smaller than asked", tc.w, tc.h, tc.method, b)
			}
			// The second request is served from the cache: same bytes.
			again := alice.do("GET", clientMedia+"/thumbnail/hs.test/"+id+q, nil).expect(t, 200, "")
			if !bytes.Equal(again.body, r.body) {
				t.Errorf("%dx%d %s: second answer differs", tc.w, tc.h, tc.method)
			}
		}

		// Smaller than asked: the original itself.
		var small bytes.Buffer
		_ = png.Encode(&small, solid(100, 50, color.RGBA{200, 10, 10, 255}))
		_, smallID := alice.upload(small.Bytes(), "image/png", "")
		r := alice.do("GET", clientMedia+"/thumbnail/hs.test/"+smallID+"?width=320&height=240", nil).expect(t, 200, "")
		if !bytes.Equal(r.body, small.Bytes()) || r.header.Get("Content-Type") != "image/png" {
			t.Fatal("a small image was not returned as it is")
		}

		// Other formats.
		var gifBuf bytes.Buffer
		_ = gif.Encode(&gifBuf, solid(300, 200, color.RGBA{0, 0, 255, 255}), nil)
		webp, err := os.ReadFile(filepath.Join("testdata", "blue-purple-pink.lossy.webp"))
		if err != nil {
			t.Fatal(err)
		}
		for name, src := range map[string][]byte{"gif": gifBuf.Bytes(), "webp": webp} {
			_, fid := alice.upload(src, "image/"+name, "")
			r := alice.do("GET", clientMedia+"/thumbnail/hs.test/"+fid+"?width=96&height=96&method=crop", nil).expect(t, 200, "")
			if b := decodeThumb(t, r).Bounds(); b.Dx() != 96 || b.Dy() != 96 {
				t.Errorf("%s crop: %v", name, b)
			}
		}

		// EXIF orientation 6 (rotate 90°): 400×200 stored is 200×400 displayed.
		_, rotID := alice.upload(exifRotated(t, photo(t, 400, 200), 6), "image/jpeg", "")
		r = alice.do("GET", clientMedia+"/thumbnail/hs.test/"+rotID+"?width=320&height=240&method=scale", nil).expect(t, 200, "")
		if b := decodeThumb(t, r).Bounds(); b.Dx() != 120 || b.Dy() != 240 {
			t.Errorf("rotated photo thumbnail %v, want 120×240", b)
		}

		// Not an image.
		_, txtID := alice.upload([]byte("just text"), "image/png", "")
		alice.do("GET", clientMedia+"/thumbnail/hs.test/"+txtID+"?width=32&height=32", nil).expect(t, 400, "M_UNKNOWN")
	}, func(c *config.Config) { dir = c.Media.StoragePath })

	// A decompression bomb is refused from its header.
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := register(t, s, "alice")
		_, id := alice.upload(big, "image/jpeg", "")
		alice.do("GET", clientMedia+"/thumbnail/hs.test/"+id+"?width=32&height=32&method=crop", nil).expect(t, 413, "M_TOO_LARGE")
		bomb := pngBomb(t, 20000, 20000)
		_, bombID := alice.upload(bomb, "image/png", "")
		alice.do("GET", clientMedia+"/thumbnail/hs.test/"+bombID+"?width=32&height=32", nil).expect(t, 413, "M_TOO_LARGE")
	}, mediaOpt(func(m *config.Media) { m.MaxImagePixels = 1_000_000 }))
}

// pngBomb is a tiny PNG that claims w×h pixels (400 MB decoded for 20000²): a
// valid header over a truncated image stream.
func pngBomb(t *testing.T, w, h int) []byte {
	t.Helper()
	var b bytes.Buffer
	_ = png.Encode(&b, solid(1, 1, color.Black))
	data := b.Bytes()
	// Patch the IHDR dimensions (bytes 16–23) and its CRC.
	putU32 := func(p []byte, v uint32) { p[0], p[1], p[2], p[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v) }
	putU32(data[16:], uint32(w))
	putU32(data[20:], uint32(h))
	putU32(data[29:], crc32.ChecksumIEEE(data[12:29]))
	return data
}

// TestBadInput: malformed IDs, server names, sizes and parameters are client
// errors, never a 500.
func TestBadInput(t *testing.T) {
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := register(t, s, "alice")
		_, id := alice.upload(photo(t, 64, 48), "image/jpeg", "")
		th := clientMedia + "/thumbnail/hs.test/" + id
		for _, tc := range []struct {
			path    string
			status  int
			errcode string
		}{
			{clientMedia + "/download/hs.test/bad.id", 400, "M_INVALID_PARAM"},
			// Cleaned by the router to .../download/etc: no route.
			{clientMedia + "/download/hs.test/bad%2F..%2F..%2Fetc", 404, "M_UNRECOGNIZED"},
			{clientMedia + "/download/hs.test/%00", 400, "M_INVALID_PARAM"},
			{clientMedia + "/download/bad%20server/abc", 400, "M_INVALID_PARAM"},
			{clientMedia + "/download/hs.test:99999/abc", 400, "M_INVALID_PARAM"},
			{clientMedia + "/download/hs.test/" + strings.Repeat("a", 300), 400, "M_INVALID_PARAM"},
			{clientMedia + "/download/hs.test/doesNotExist", 404, "M_NOT_FOUND"},
			{clientMedia + "/download/hs.test/" + id + "?timeout_ms=abc", 400, "M_INVALID_PARAM"},
			{clientMedia + "/download/remote.example/abc?allow_remote=false", 404, "M_NOT_FOUND"},
			{clientMedia + "/thumbnail/hs.test/bad.id?width=1&height=1", 400, "M_INVALID_PARAM"},
			{th + "?width=abc&height=32", 400, "M_INVALID_PARAM"},
			{th + "?width=-5&height=32", 400, "M_INVALID_PARAM"},
			{th + "?width=0&height=32", 400, "M_INVALID_PARAM"},
			{th + "?width=32", 400, "M_MISSING_PARAM"},
			{th + "?width=32&height=32&method=stretch", 400, "M_INVALID_PARAM"},
			{th + "?width=99999999999999999999999&height=32", 400, "M_INVALID_PARAM"},
			{th + "?width=2147483648&height=2147483648", 200, ""},
			{th + "?width=100000000&height=1&method=crop", 200, ""},
			{th + "?width=1&height=100000000&method=scale", 200, ""},
			{clientMedia + "/preview_url", 400, "M_MISSING_PARAM"},
			{clientMedia + "/preview_url?url=ftp://example.org/", 400, "M_INVALID_PARAM"},
			{clientMedia + "/preview_url?url=%2Frelative", 400, "M_INVALID_PARAM"},
			{clientMedia + "/preview_url?url=http://user:pw@example.org/", 400, "M_INVALID_PARAM"},
		} {
			r := alice.do("GET", tc.path, nil)
			if r.status >= 500 || r.status != tc.status || (tc.errcode != "" && r.errcode() != tc.errcode) {
				t.Errorf("GET %s: %s, want %d %s", tc.path, r, tc.status, tc.errcode)
			}
		}
	})
}

// exifRotated adds an EXIF Orientation to a JPEG.
func exifRotated(t *testing.T, jpg []byte, o byte) []byte {
	t.Helper()
	tiff := []byte{'I', 'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, o, 0, 0, 0, 0, 0, 0, 0}
	seg := append([]byte("Exif\x00\x00"), tiff...)
	n := len(seg) + 2
	out := append([]byte{}, jpg[:2]...)
	out = append(out, 0xff, 0xe1, byte(n>>8), byte(n))
	out = append(out, seg...)
	return append(out, jpg[2:]...)
}

// twoDSNs returns, per database kind, two fresh databases.
func twoDSNs(t *testing.T) map[string][2]string {
	first, second := storagetest.DSNs(t), storagetest.DSNs(t)
	out := map[string][2]string{}
	for k, v := range first {
		out[k] = [2]string{v, second[k]}
	}
	return out
}

// TestQuarantineAndDelete: quarantined media is hidden everywhere until released;
// deleted media is gone, and its file goes with it unless other media shares the
// same content.
func TestQuarantineAndDelete(t *testing.T) {
	var dir string
	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		ctx := t.Context()
		alice := register(t, s, "alice")
		shared := randomBytes(4096)
		_, id1 := alice.upload(shared, "application/octet-stream", "")
		_, id2 := alice.upload(shared, "application/octet-stream", "")
		_, id3 := alice.upload(randomBytes(4096), "application/octet-stream", "")
		dl := func(id string) resp { return alice.do("GET", clientMedia+"/download/hs.test/"+id, nil) }

		if ok, err := s.Media.QuarantineMedia(ctx, "hs.test", id1, true); err != nil || !ok {
			t.Fatalf("quarantine: %v %v", ok, err)
		}
		dl(id1).expect(t, 404, "M_NOT_FOUND")
		dl(id2).expect(t, 200, "") // same content, different media: not affected
		if _, err := s.Media.QuarantineMedia(ctx, "hs.test", id1, false); err != nil {
			t.Fatal(err)
		}
		dl(id1).expect(t, 200, "")

		files := blobFiles(t, dir)
		if err := s.Media.DeleteMedia(ctx, "hs.test", id1); err != nil {
			t.Fatal(err)
		}
		dl(id1).expect(t, 404, "M_NOT_FOUND")
		if got := dl(id2).expect(t, 200, ""); !bytes.Equal(got.body, shared) {
			t.Fatal("shared content lost with the other media")
		}
		if n := blobFiles(t, dir); n != files {
			t.Fatalf("shared file removed: %d -> %d files", files, n)
		}
		if err := s.Media.DeleteMedia(ctx, "hs.test", id3); err != nil {
			t.Fatal(err)
		}
		if n := blobFiles(t, dir); n != files-1 {
			t.Fatalf("unshared file kept: %d -> %d files", files, n)
		}
		if ok, err := s.Media.QuarantineMedia(ctx, "hs.test", "nonexistent", true); err != nil || ok {
			t.Fatalf("quarantining unknown media: %v %v", ok, err)
		}
	}, func(c *config.Config) { dir = c.Media.StoragePath })
}
