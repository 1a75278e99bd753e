package mediaapi_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
	"maunium.net/go/mautrix"

	"hearth/config"
	"hearth/internal/testserver"
)

const (
	clientMedia = "/_matrix/client/v1/media"
	legacyMedia = "/_matrix/media/v3"
)

// mediaIn keeps a server's media files in a test directory (returned through dir).
func mediaIn(t testing.TB, dir *string) testserver.Option {
	return func(c *config.Config) {
		d := t.TempDir()
		if dir != nil {
			*dir = d
		}
		c.Media.StoragePath = d
	}
}

// mediaOpt adjusts the media section.
func mediaOpt(fn func(m *config.Media)) testserver.Option {
	return func(c *config.Config) { fn(&c.Media) }
}

// startServer starts one server with its media in a test directory.
func startServer(t testing.TB, dsn string, opts ...testserver.Option) *testserver.Server {
	t.Helper()
	s := testserver.Start(t, dsn, append([]testserver.Option{mediaIn(t, nil)}, opts...)...)
	s.ClientAPI.Accounts().SetBcryptCost(bcrypt.MinCost)
	return s
}

// forEachServer runs fn on a fresh server per database.
func forEachServer(t *testing.T, fn func(t *testing.T, s *testserver.Server), opts ...testserver.Option) {
	t.Helper()
	testserver.ForEachDB(t, func(t *testing.T, s *testserver.Server) {
		s.ClientAPI.Accounts().SetBcryptCost(bcrypt.MinCost)
		fn(t, s)
	}, append([]testserver.Option{mediaIn(t, nil)}, opts...)...)
}

// client talks HTTP to one server as one user (token may be empty).
type client struct {
	t     testing.TB
	base  string
	token string
}

// register creates a user through the dummy registration flow.
func register(t testing.TB, s *testserver.Server, name string) *client {
	t.Helper()
	cli, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	r, err := cli.RegisterDummy(context.Background(), &mautrix.ReqRegister[any]{Username: name, Password: "pw-" + name})
	if err != nil {
		t.Fatalf("registering %s: %v", name, err)
	}
	return &client{t: t, base: s.URL, token: r.AccessToken}
}

func anon(t testing.TB, s *testserver.Server) *client { return &client{t: t, base: s.URL} }

// resp is a read response.
type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json() map[string]any {
	var m map[string]any
	_ = json.Unmarshal(r.body, &m)
	return m
}

func (r resp) str(key string) string { s, _ := r.json()[key].(string); return s }

func (r resp) errcode() string { return r.str("errcode") }

func (r resp) String() string {
	b := r.body
	if len(b) > 300 {
		b = b[:300]
	}
	return fmt.Sprintf("%d %s", r.status, b)
}

// expect asserts the status and, when errcode is not "", the errcode.
func (r resp) expect(t testing.TB, status int, errcode string) resp {
	t.Helper()
	if r.status != status || (errcode != "" && r.errcode() != errcode) {
		t.Fatalf("got %s; want %d %s", r, status, errcode)
	}
	return r
}

// do sends a request; body may be nil, []byte or an io.Reader (sent chunked).
func (c *client) do(method, path string, body any, header ...string) resp {
	c.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case io.Reader:
		rd = b
	default:
		c.t.Fatalf("unsupported body %T", body)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	hr, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer hr.Body.Close()
	raw, err := io.ReadAll(hr.Body)
	if err != nil {
		c.t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp{status: hr.StatusCode, header: hr.Header, body: raw}
}

// upload uploads data and returns the server name and media ID of its mxc:// URI.
func (c *client) upload(data []byte, contentType, filename string) (string, string) {
	c.t.Helper()
	path := legacyMedia + "/upload"
	if filename != "" {
		path += "?filename=" + filename
	}
	r := c.do("POST", path, data, "Content-Type", contentType).expect(c.t, 200, "")
	return splitMXC(c.t, r.str("content_uri"))
}

func splitMXC(t testing.TB, uri string) (string, string) {
	t.Helper()
	rest, ok := strings.CutPrefix(uri, "mxc://")
	server, id, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 || server == "" || id == "" {
		t.Fatalf("bad content URI %q", uri)
	}
	return server, id
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// photo is a w×h JPEG with smooth gradients and some texture, like a photo.
func photo(t testing.TB, w, h int) []byte {
	t.Helper()
	img := image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio420)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Y[y*img.YStride+x] = uint8((x*255/w + y*255/h + (x*y)%17) / 2)
		}
	}
	for y := 0; y < (h+1)/2; y++ {
		for x := 0; x < (w+1)/2; x++ {
			img.Cb[y*img.CStride+x] = uint8(x * 255 / ((w + 1) / 2))
			img.Cr[y*img.CStride+x] = uint8(y * 255 / ((h + 1) / 2))
		}
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 80}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// solid is a w×h image of one colour.
func solid(w, h int, c color.Color) image.Image {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, c)
		}
	}
	return img
}

// blobFiles counts the content files under a media directory.
func blobFiles(t testing.TB, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "tmp" {
			return filepath.SkipDir
		}
		if !d.IsDir() {
			n++
		}
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return n
}
