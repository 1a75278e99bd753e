package mediaapi

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hearth/config"
	"hearth/httputil"
)

func TestMediaIDs(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := newMediaID()
		if len(id) != mediaIDLen || !validMediaID(id) || seen[id] {
			t.Fatalf("bad or repeated media ID %q", id)
		}
		seen[id] = true
	}
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"abcXYZ019_-", true},
		{"", false},
		{"../../etc/passwd", false},
		{"a/b", false},
		{"a.b", false},
		{"a%2Fb", false},
		{"ünicode", false},
		{strings.Repeat("a", 255), true},
		{strings.Repeat("a", 256), false},
	} {
		if got := validMediaID(tc.id); got != tc.ok {
			t.Errorf("validMediaID(%q) = %v, want %v", tc.id, got, tc.ok)
		}
	}
}

func TestCheckMXC(t *testing.T) {
	for _, tc := range []struct {
		server, id string
		ok         bool
	}{
		{"example.org", "abc", true},
		{"127.0.0.1:8448", "abc", true},
		{"[::1]:8448", "abc", true},
		{"bad server", "abc", false},
		{"example.org/..", "abc", false},
		{"", "abc", false},
		{"example.org", "a..b", false},
	} {
		err := checkMXC(tc.server, tc.id)
		var me *httputil.Error
		if tc.ok != (err == nil) || (err != nil && (!errors.As(err, &me) || me.Status != 400)) {
			t.Errorf("checkMXC(%q, %q) = %v, want ok=%v (400 otherwise)", tc.server, tc.id, err, tc.ok)
		}
	}
}

// TestEndpointMissing: which answers to the federation download make the
// legacy endpoint worth a try.
func TestEndpointMissing(t *testing.T) {
	for _, tc := range []struct {
		status int
		code   string
		want   bool
	}{
		{404, "M_UNRECOGNIZED", true},
		{404, "", true},
		{404, "M_NOT_FOUND", false},
		{405, "", true},
		{501, "", true},
		{400, "M_UNRECOGNIZED", true},
		{400, "", true}, // not a Matrix answer (Complement's mock answers so)
		{400, "M_INVALID_PARAM", false},
		{401, "M_UNAUTHORIZED", false},
		{403, "M_FORBIDDEN", false},
		{502, "", false},
	} {
		if got := endpointMissing(tc.status, tc.code); got != tc.want {
			t.Errorf("endpointMissing(%d, %q) = %v, want %v", tc.status, tc.code, got, tc.want)
		}
	}
}

func TestCleanFilename(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"photo.jpg", "photo.jpg"},
		{"../../etc/passwd", "....etcpasswd"},
		{"a\x00b\nc", "abc"},
		{"  spaced  ", "spaced"},
		{"..", ""},
		{"Zoë.png", "Zoë.png"},
		{"bad\xffutf8", "badutf8"},
		{strings.Repeat("é", 200), strings.Repeat("é", 127)},
	} {
		if got := cleanFilename(tc.in); got != tc.want {
			t.Errorf("cleanFilename(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestContentHeaders(t *testing.T) {
	for _, tc := range []struct {
		ct, name string
		thumb    bool
		want     string
	}{
		{"image/png", "cat.png", false, `inline; filename=cat.png`},
		{"IMAGE/PNG; charset=x", "", false, `inline`},
		{"text/html", "page.html", false, `attachment; filename=page.html`},
		{"image/svg+xml", "x.svg", false, `attachment; filename=x.svg`},
		{"application/octet-stream", "a b.bin", false, `attachment; filename="a b.bin"`},
		{"application/pdf", "Zoë.pdf", false, `attachment; filename*=utf-8''Zo%C3%AB.pdf`},
		{"image/jpeg", "thumbnail.jpg", true, `inline; filename=thumbnail.jpg`},
	} {
		if got := contentDisposition(tc.ct, tc.name, tc.thumb); got != tc.want {
			t.Errorf("contentDisposition(%q, %q) = %q, want %q", tc.ct, tc.name, got, tc.want)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"", "application/octet-stream"},
		{"image/png", "image/png"},
		{"text/plain; charset=UTF-8", "text/plain; charset=UTF-8"},
		{"garbage", "application/octet-stream"},
		{"text/plain; charset", "application/octet-stream"},
	} {
		if got := cleanContentType(tc.in); got != tc.want {
			t.Errorf("cleanContentType(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestIPFilter(t *testing.T) {
	def, err := newIPFilter(nil, config.DefaultDeniedCIDRs)
	if err != nil {
		t.Fatal(err)
	}
	loop, err := newIPFilter([]string{"127.0.0.0/8"}, config.DefaultDeniedCIDRs)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ip              string
		byDefault, loop bool
	}{
		{"8.8.8.8", true, true},
		{"2606:4700::1111", true, true},
		{"127.0.0.1", false, true},
		{"127.1.2.3", false, true},
		{"::ffff:127.0.0.1", false, true},
		{"::1", false, false},
		{"10.1.2.3", false, false},
		{"192.168.1.1", false, false},
		{"172.16.5.4", false, false},
		{"169.254.169.254", false, false},
		{"100.64.0.1", false, false},
		{"0.0.0.0", false, false},
		{"::", false, false},
		{"fe80::1%eth0", false, false},
		{"fd00::1", false, false},
		{"224.0.0.1", false, false},
	} {
		ip := netip.MustParseAddr(tc.ip)
		if got := def.Allowed(ip); got != tc.byDefault {
			t.Errorf("default filter Allowed(%s) = %v, want %v", tc.ip, got, tc.byDefault)
		}
		if got := loop.Allowed(ip); got != tc.loop {
			t.Errorf("127/8-allowing filter Allowed(%s) = %v, want %v", tc.ip, got, tc.loop)
		}
	}
	all, _ := newIPFilter([]string{"0.0.0.0/0", "::/0"}, config.DefaultDeniedCIDRs)
	if all.Allowed(netip.MustParseAddr("0.0.0.0")) || all.Allowed(netip.MustParseAddr("::")) || !all.Allowed(netip.MustParseAddr("10.0.0.1")) {
		t.Error("allowing everything must still refuse the unspecified addresses")
	}
}

// TestDialerChecksDialledAddress: the dialer's Control hook refuses a loopback
// address even when it was reached through a host name that was never checked.
func TestDialerChecksDialledAddress(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	def, _ := newIPFilter(nil, config.DefaultDeniedCIDRs)
	if _, err := def.dialer().DialContext(context.Background(), "tcp", net.JoinHostPort("localhost", port)); !errors.Is(err, errAddressBlocked) {
		t.Fatalf("dial localhost through default filter: %v, want errAddressBlocked", err)
	}
	if err := def.checkHost(context.Background(), "localhost"); !errors.Is(err, errAddressBlocked) {
		t.Fatalf("checkHost(localhost) = %v, want errAddressBlocked", err)
	}
	allow, _ := newIPFilter([]string{"127.0.0.0/8", "::1/128"}, config.DefaultDeniedCIDRs)
	c, err := allow.dialer().DialContext(context.Background(), "tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("dial through allowing filter: %v", err)
	}
	c.Close()
}

func TestThumbGeometry(t *testing.T) {
	for _, tc := range []struct {
		sw, sh int
		spec   thumbSpec
		want   [4]int // tw, th, rw, rh
	}{
		{4000, 3000, thumbSpec{320, 240, methodScale}, [4]int{320, 240, 4000, 3000}},
		{4000, 3000, thumbSpec{800, 800, methodScale}, [4]int{800, 600, 4000, 3000}},
		{3000, 4000, thumbSpec{800, 600, methodScale}, [4]int{450, 600, 3000, 4000}},
		{4000, 3000, thumbSpec{96, 96, methodCrop}, [4]int{96, 96, 3000, 3000}},
		{4000, 3000, thumbSpec{32, 32, methodCrop}, [4]int{32, 32, 3000, 3000}},
		{4000, 3000, thumbSpec{400, 100, methodCrop}, [4]int{400, 100, 4000, 1000}},
		// Smaller than asked: never upscaled.
		{100, 50, thumbSpec{320, 240, methodScale}, [4]int{100, 50, 100, 50}},
		{100, 50, thumbSpec{96, 96, methodCrop}, [4]int{96, 50, 96, 50}},
		// Absurd requests stay within the image.
		{4000, 3000, thumbSpec{1 << 20, 10, methodCrop}, [4]int{4000, 10, 4000, 10}},
		{4000, 3000, thumbSpec{1 << 20, 1, methodScale}, [4]int{1, 1, 4000, 3000}},
		{1, 10000, thumbSpec{32, 32, methodCrop}, [4]int{1, 32, 1, 32}},
	} {
		tw, th, rw, rh := thumbGeometry(tc.sw, tc.sh, tc.spec)
		if got := [4]int{tw, th, rw, rh}; got != tc.want {
			t.Errorf("thumbGeometry(%d×%d, %v) = %v, want %v", tc.sw, tc.sh, tc.spec, got, tc.want)
		}
	}
}

func TestPickStandardAndParams(t *testing.T) {
	for _, tc := range []struct {
		req  thumbSpec
		want thumbSpec
		ok   bool
	}{
		{thumbSpec{32, 32, methodCrop}, thumbSpec{32, 32, methodCrop}, true},
		{thumbSpec{50, 40, methodCrop}, thumbSpec{96, 96, methodCrop}, true},
		{thumbSpec{100, 100, methodCrop}, thumbSpec{}, false},
		{thumbSpec{300, 200, methodScale}, thumbSpec{320, 240, methodScale}, true},
		{thumbSpec{640, 481, methodScale}, thumbSpec{800, 600, methodScale}, true},
		{thumbSpec{1000, 700, methodScale}, thumbSpec{}, false},
	} {
		got, ok := pickStandard(tc.req)
		if got != tc.want || ok != tc.ok {
			t.Errorf("pickStandard(%v) = %v, %v; want %v, %v", tc.req, got, ok, tc.want, tc.ok)
		}
	}
	for _, tc := range []struct {
		query string
		ok    bool
	}{
		{"width=32&height=32", true},
		{"width=32&height=32&method=crop", true},
		{"width=99999999999&height=1", true},
		{"width=abc&height=32", false},
		{"width=-1&height=32", false},
		{"width=0&height=32", false},
		{"width=32", false},
		{"width=32&height=32&method=stretch", false},
		{"width=999999999999999999999999&height=1", false},
	} {
		q, _ := url.ParseQuery(tc.query)
		_, err := thumbParams(q)
		if (err == nil) != tc.ok {
			t.Errorf("thumbParams(%s) = %v, want ok=%v", tc.query, err, tc.ok)
		}
	}
}

// testImage is an image with a distinct colour in each quadrant.
func testImage(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := color.RGBA{A: 255}
			if x >= w/2 {
				c.R = 255
			}
			if y >= h/2 {
				c.G = 255
			}
			img.SetRGBA(x, y, c)
		}
	}
	return img
}

// withOrientation inserts an EXIF APP1 segment carrying orientation o after SOI.
func withOrientation(jpg []byte, o uint16) []byte {
	var tiff bytes.Buffer
	tiff.WriteString("II")
	le := binary.LittleEndian
	_ = binary.Write(&tiff, le, uint16(42))
	_ = binary.Write(&tiff, le, uint32(8))
	_ = binary.Write(&tiff, le, uint16(1))                  // one entry
	_ = binary.Write(&tiff, le, [4]uint16{0x0112, 3, 1, 0}) // tag, SHORT, count=1 (uint32 as two uint16)
	_ = binary.Write(&tiff, le, [2]uint16{o, 0})
	_ = binary.Write(&tiff, le, uint32(0))
	seg := append([]byte("Exif\x00\x00"), tiff.Bytes()...)
	var out bytes.Buffer
	out.Write(jpg[:2])
	out.Write([]byte{0xff, 0xe1})
	_ = binary.Write(&out, binary.BigEndian, uint16(len(seg)+2))
	out.Write(seg)
	out.Write(jpg[2:])
	return out.Bytes()
}

func encodeJPEG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestProbeAndOrientation(t *testing.T) {
	src := testImage(40, 20)
	var pngBuf, gifBuf bytes.Buffer
	_ = png.Encode(&pngBuf, src)
	_ = gif.Encode(&gifBuf, src, nil)
	webpData, err := os.ReadFile(filepath.Join("testdata", "blue-purple-pink.lossy.webp"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		data   []byte
		format string
		w, h   int
		orient int
	}{
		{"jpeg", encodeJPEG(t, src), "jpeg", 40, 20, 1},
		{"jpeg rotated", withOrientation(encodeJPEG(t, src), 6), "jpeg", 40, 20, 6},
		{"png", pngBuf.Bytes(), "png", 40, 20, 1},
		{"gif", gifBuf.Bytes(), "gif", 40, 20, 1},
		{"webp", webpData, "webp", 150, 100, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info, err := probeImage(bytes.NewReader(tc.data), int64(len(tc.data)))
			if err != nil {
				t.Fatal(err)
			}
			if info.format.name != tc.format || info.RawW != tc.w || info.RawH != tc.h || info.Orientation != tc.orient {
				t.Fatalf("probe = %s %d×%d o=%d", info.format.name, info.RawW, info.RawH, info.Orientation)
			}
			img, err := decodeImage(bytes.NewReader(tc.data), info)
			if err != nil {
				t.Fatal(err)
			}
			thumbs := renderThumbnails(img, info, []thumbSpec{{16, 16, methodCrop}, {20, 20, methodScale}})
			dw, dh := info.displaySize()
			for i, spec := range []thumbSpec{{16, 16, methodCrop}, {20, 20, methodScale}} {
				tw, th, _, _ := thumbGeometry(dw, dh, spec)
				if b := thumbs[i].Rect; b.Dx() != tw || b.Dy() != th {
					t.Errorf("%v: got %v, want %d×%d", spec, b, tw, th)
				}
			}
		})
	}
	for _, bad := range [][]byte{nil, []byte("hello"), []byte("\xff\xd8\xff\xe0 truncated"), []byte("\x89PNG\r\n\x1a\n\x00\x00")} {
		if _, err := probeImage(bytes.NewReader(bad), int64(len(bad))); !errors.Is(err, errNotImage) {
			t.Errorf("probeImage(%q) = %v, want errNotImage", bad, err)
		}
	}
}

// TestOrient checks each EXIF orientation against where the red (top-right)
// quadrant of the stored image must end up when displayed.
func TestOrient(t *testing.T) {
	src := testImage(4, 2) // red on the right half, green on the bottom half
	for _, tc := range []struct {
		o    int
		w, h int
		// displayed pixel that must hold the stored top-right pixel (red, not green)
		x, y int
	}{
		{1, 4, 2, 3, 0},
		{2, 4, 2, 0, 0},
		{3, 4, 2, 0, 1},
		{4, 4, 2, 3, 1},
		{5, 2, 4, 0, 3},
		{6, 2, 4, 1, 3},
		{7, 2, 4, 1, 0},
		{8, 2, 4, 0, 0},
	} {
		d := orient(src, tc.o)
		if d.Rect.Dx() != tc.w || d.Rect.Dy() != tc.h {
			t.Errorf("orientation %d: size %v, want %d×%d", tc.o, d.Rect, tc.w, tc.h)
			continue
		}
		if c := d.RGBAAt(tc.x, tc.y); c.R != 255 || c.G != 0 {
			t.Errorf("orientation %d: pixel (%d,%d) = %v, want the stored top-right red", tc.o, tc.x, tc.y, c)
		}
	}
}

func TestParseOpenGraph(t *testing.T) {
	base, _ := url.Parse("https://example.org/blog/post")
	for _, tc := range []struct {
		name, page, ct string
		want           map[string]any
	}{
		{"og tags", `<html><head><title>Fallback</title>
			<meta property="og:title" content="Real title">
			<meta property="og:description" content=" A post ">
			<meta property="og:image" content="/img/a.png"></head><body><meta property="og:type" content="late"></body>`,
			"text/html", map[string]any{"og:title": "Real title", "og:description": "A post", "og:image": "https://example.org/img/a.png"}},
		{"fallbacks", `<html><head><title>  Just a
			title </title><meta name="description" content="desc"></head>`,
			"text/html", map[string]any{"og:title": "Just a title", "og:description": "desc"}},
		{"latin1", "<html><head><meta charset=\"iso-8859-1\"><title>Caf\xe9</title></head>",
			"text/html", map[string]any{"og:title": "Café"}},
		{"first wins", `<meta property="og:title" content="one"><meta property="og:title" content="two">`,
			"text/html; charset=utf-8", map[string]any{"og:title": "one"}},
		{"nothing", `not html at all`, "text/html", map[string]any{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := parseOpenGraph(strings.NewReader(tc.page), tc.ct, base)
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
		})
	}
}

func TestBlobStore(t *testing.T) {
	s := newBlobStore(t.TempDir())
	put := func(data string) *stagedBlob {
		t.Helper()
		b, err := s.stage(strings.NewReader(data), 10)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.commit(b, func() error { return nil }); err != nil {
			t.Fatal(err)
		}
		return b
	}
	a, b := put("hello"), put("hello")
	if a.SHA256 != b.SHA256 || a.SHA256 != "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824" {
		t.Fatalf("hashes %s %s", a.SHA256, b.SHA256)
	}
	if got, err := os.ReadFile(s.path(a.SHA256)); err != nil || string(got) != "hello" {
		t.Fatalf("stored %q, %v", got, err)
	}
	if _, err := s.stage(strings.NewReader("12345678901"), 10); !errors.Is(err, errTooLarge) {
		t.Fatalf("11 bytes over a 10-byte limit: %v", err)
	}
	if _, err := s.stage(strings.NewReader("1234567890"), 10); err != nil {
		t.Fatalf("exactly the limit: %v", err)
	}
	// Nothing but the one staged-and-abandoned file is left in tmp.
	entries, _ := os.ReadDir(s.tmpDir())
	if len(entries) != 1 {
		t.Fatalf("tmp holds %d files, want 1 (the uncommitted one)", len(entries))
	}
	if err := s.removeIfUnreferenced(a.SHA256, func() (bool, error) { return true, nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.path(a.SHA256)); err != nil {
		t.Fatal("referenced blob was removed")
	}
	if err := s.removeIfUnreferenced(a.SHA256, func() (bool, error) { return false, nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.path(a.SHA256)); !os.IsNotExist(err) {
		t.Fatal("unreferenced blob was kept")
	}
}

// TestAreaResize: averaging preserves a flat colour exactly and the mean of a
// pattern, for each source type the decoders produce.
func TestAreaResize(t *testing.T) {
	flat := color.RGBA{200, 100, 50, 255}
	ycc := image.NewYCbCr(image.Rect(0, 0, 301, 199), image.YCbCrSubsampleRatio420)
	yy, cb, cr := color.RGBToYCbCr(flat.R, flat.G, flat.B)
	for i := range ycc.Y {
		ycc.Y[i] = yy
	}
	for i := range ycc.Cb {
		ycc.Cb[i], ycc.Cr[i] = cb, cr
	}
	nrgba := image.NewNRGBA(image.Rect(0, 0, 301, 199))
	pal := image.NewPaletted(image.Rect(0, 0, 301, 199), color.Palette{flat})
	gray := image.NewGray(image.Rect(0, 0, 301, 199))
	for y := 0; y < 199; y++ {
		for x := 0; x < 301; x++ {
			nrgba.SetNRGBA(x, y, color.NRGBA{flat.R, flat.G, flat.B, 255})
			gray.SetGray(x, y, color.Gray{Y: 77})
		}
	}
	wantYCC := color.RGBAModel.Convert(color.YCbCr{Y: yy, Cb: cb, Cr: cr}).(color.RGBA)
	for name, tc := range map[string]struct {
		src  image.Image
		want color.RGBA
	}{
		"ycbcr":    {ycc, wantYCC},
		"nrgba":    {nrgba, flat},
		"paletted": {pal, flat},
		"gray":     {gray, color.RGBA{77, 77, 77, 255}},
	} {
		dst := image.NewRGBA(image.Rect(0, 0, 37, 23))
		areaResize(dst, tc.src, image.Rect(3, 5, 290, 190))
		for y := 0; y < 23; y++ {
			for x := 0; x < 37; x++ {
				if c := dst.RGBAAt(x, y); c != tc.want {
					t.Fatalf("%s: pixel (%d,%d) = %v, want %v", name, x, y, c, tc.want)
				}
			}
		}
	}
	// A one-pixel checkerboard averages to mid grey.
	check := image.NewGray(image.Rect(0, 0, 64, 64))
	for y := 0; y < 64; y++ {
		for x := 0; x < 64; x++ {
			if (x+y)%2 == 0 {
				check.SetGray(x, y, color.Gray{Y: 255})
			}
		}
	}
	dst := image.NewRGBA(image.Rect(0, 0, 8, 8))
	areaResize(dst, check, check.Rect)
	if c := dst.RGBAAt(3, 3); c.R < 126 || c.R > 129 {
		t.Fatalf("checkerboard averaged to %v", c)
	}
}

// TestGeometryClampInvariant: clamping a request's sides to the image's size never
// changes the thumbnail, which lets on-demand sizes be cached under clamped keys.
func TestGeometryClampInvariant(t *testing.T) {
	for _, src := range [][2]int{{4000, 3000}, {300, 200}, {1, 5000}, {640, 480}} {
		for _, w := range []int{1, 31, 320, 799, 1000, 4000, 9999, 1 << 20} {
			for _, h := range []int{1, 17, 240, 600, 3000, 7777, 1 << 20} {
				for _, m := range []string{methodCrop, methodScale} {
					spec := thumbSpec{w, h, m}
					clamped := thumbSpec{min(w, src[0]), min(h, src[1]), m}
					a1, a2, a3, a4 := thumbGeometry(src[0], src[1], spec)
					b1, b2, b3, b4 := thumbGeometry(src[0], src[1], clamped)
					if [4]int{a1, a2, a3, a4} != [4]int{b1, b2, b3, b4} {
						t.Fatalf("%v on %v: %v vs clamped %v", spec, src, [4]int{a1, a2, a3, a4}, [4]int{b1, b2, b3, b4})
					}
				}
			}
		}
	}
}
