package mediaapi

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/draw"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"math"
	"slices"

	xdraw "golang.org/x/image/draw"
	"golang.org/x/image/webp"
)

// Image decoding is by explicit format (never image.Decode's registry) so that only
// the four formats below are ever parsed, whatever else is linked in.

// imageFormat is a decodable image format.
type imageFormat struct {
	name   string
	magic  func([]byte) bool
	config func(io.Reader) (image.Config, error)
	decode func(io.Reader) (image.Image, error)
}

var imageFormats = []imageFormat{
	{"jpeg", func(b []byte) bool { return bytes.HasPrefix(b, []byte("\xff\xd8\xff")) }, jpeg.DecodeConfig, jpeg.Decode},
	{"png", func(b []byte) bool { return bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) }, png.DecodeConfig, png.Decode},
	// gif.Decode returns the first frame only: thumbnails are never animated.
	{"gif", func(b []byte) bool {
		return bytes.HasPrefix(b, []byte("GIF87a")) || bytes.HasPrefix(b, []byte("GIF89a"))
	}, gif.DecodeConfig, gif.Decode},
	{"webp", func(b []byte) bool { return len(b) >= 12 && string(b[0:4]) == "RIFF" && string(b[8:12]) == "WEBP" }, webp.DecodeConfig, webp.Decode},
}

// errNotImage means the content is not an image that can be thumbnailed.
var errNotImage = errors.New("not a supported image")

// imageInfo is what an image's header says.
type imageInfo struct {
	format *imageFormat
	// RawW and RawH are the stored pixel dimensions.
	RawW, RawH int
	// Orientation is the EXIF orientation (1–8; 1 when absent).
	Orientation int
}

// ContentType is the MIME type of the image's format.
func (i *imageInfo) ContentType() string { return "image/" + i.format.name }

// pixels is the decoded size in pixels.
func (i *imageInfo) pixels() int64 { return int64(i.RawW) * int64(i.RawH) }

// rotated reports whether the orientation swaps width and height.
func (i *imageInfo) rotated() bool { return i.Orientation >= 5 && i.Orientation <= 8 }

// displaySize is the size the image is meant to be seen at, after orientation.
func (i *imageInfo) displaySize() (int, int) {
	if i.rotated() {
		return i.RawH, i.RawW
	}
	return i.RawW, i.RawH
}

// probeImage reads only the header of an image (never its pixels), so the pixel
// limit can be checked before anything large is allocated.
func probeImage(r io.ReaderAt, size int64) (info *imageInfo, err error) {
	defer func() {
		if p := recover(); p != nil {
			info, err = nil, fmt.Errorf("%w: header decoder panicked: %v", errNotImage, p)
		}
	}()
	var head [16]byte
	n, _ := r.ReadAt(head[:], 0)
	var f *imageFormat
	for i := range imageFormats {
		if imageFormats[i].magic(head[:n]) {
			f = &imageFormats[i]
			break
		}
	}
	if f == nil {
		return nil, errNotImage
	}
	cfg, err := f.config(bufio.NewReaderSize(io.NewSectionReader(r, 0, size), 16<<10))
	if err != nil {
		return nil, fmt.Errorf("%w: %s header: %v", errNotImage, f.name, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, fmt.Errorf("%w: empty image", errNotImage)
	}
	info = &imageInfo{format: f, RawW: cfg.Width, RawH: cfg.Height, Orientation: 1}
	if f.name == "jpeg" {
		info.Orientation = jpegOrientation(r, size)
	}
	return info, nil
}

// decodeImage decodes a whole image whose header probeImage accepted. Decoders are
// third-party code fed untrusted bytes: a panic is turned into an error.
func decodeImage(r io.Reader, info *imageInfo) (img image.Image, err error) {
	defer func() {
		if p := recover(); p != nil {
			img, err = nil, fmt.Errorf("%w: %s decoder panicked: %v", errNotImage, info.format.name, p)
		}
	}()
	img, err = info.format.decode(r)
	if err != nil {
		return nil, fmt.Errorf("%w: decoding %s: %v", errNotImage, info.format.name, err)
	}
	return img, nil
}

// jpegOrientation finds the EXIF Orientation tag (0x0112) in a JPEG's APP1
// segment, reading at most the first 128 KiB. It returns 1 when there is none.
func jpegOrientation(r io.ReaderAt, size int64) int {
	buf := make([]byte, min(size, 128<<10))
	n, _ := r.ReadAt(buf, 0)
	buf = buf[:n]
	i := 2 // after SOI
	for i+4 <= len(buf) {
		if buf[i] != 0xff {
			return 1
		}
		marker := buf[i+1]
		switch {
		case marker == 0xff: // fill byte
			i++
			continue
		case marker == 0xd8 || marker == 0x01 || (marker >= 0xd0 && marker <= 0xd7):
			i += 2
			continue
		case marker == 0xda || marker == 0xd9: // start of scan / end: no EXIF before
			return 1
		}
		segLen := int(binary.BigEndian.Uint16(buf[i+2:]))
		if segLen < 2 || i+2+segLen > len(buf) {
			return 1
		}
		seg := buf[i+4 : i+2+segLen]
		if marker == 0xe1 && len(seg) > 6 && string(seg[:6]) == "Exif\x00\x00" {
			return tiffOrientation(seg[6:])
		}
		i += 2 + segLen
	}
	return 1
}

// tiffOrientation reads the Orientation entry of IFD0 of a TIFF (EXIF) block.
func tiffOrientation(t []byte) int {
	if len(t) < 8 {
		return 1
	}
	var bo binary.ByteOrder
	switch string(t[:2]) {
	case "II":
		bo = binary.LittleEndian
	case "MM":
		bo = binary.BigEndian
	default:
		return 1
	}
	if bo.Uint16(t[2:]) != 42 {
		return 1
	}
	ifd := int(bo.Uint32(t[4:]))
	if ifd < 8 || ifd+2 > len(t) {
		return 1
	}
	count := int(bo.Uint16(t[ifd:]))
	for k := 0; k < count; k++ {
		e := ifd + 2 + 12*k
		if e+12 > len(t) {
			return 1
		}
		if bo.Uint16(t[e:]) != 0x0112 {
			continue
		}
		// Type 3 is SHORT; the value sits in the first two bytes of the value field.
		if bo.Uint16(t[e+2:]) != 3 {
			return 1
		}
		if v := int(bo.Uint16(t[e+8:])); v >= 1 && v <= 8 {
			return v
		}
		return 1
	}
	return 1
}

// thumbGeometry computes, for a source of display size sw×sh, the size tw×th of the
// thumbnail for spec and the size rw×rh of the centred source region it shows.
// It never upscales (Client-Server API, "Thumbnails": servers MUST NOT upscale).
//
// "scale" fits the whole image inside spec.W×spec.H keeping its aspect ratio, so
// one side matches the request and the other is smaller. "crop" fills exactly
// spec.W×spec.H (the aspect ratio of the request), cutting the overflow around the
// centre.
func thumbGeometry(sw, sh int, spec thumbSpec) (tw, th, rw, rh int) {
	fx, fy := float64(spec.W)/float64(sw), float64(spec.H)/float64(sh)
	if spec.Method == methodCrop {
		f := max(fx, fy)
		if f >= 1 {
			tw, th = min(spec.W, sw), min(spec.H, sh)
			return tw, th, tw, th
		}
		rw = clamp(int(math.Round(float64(spec.W)/f)), 1, sw)
		rh = clamp(int(math.Round(float64(spec.H)/f)), 1, sh)
		return spec.W, spec.H, rw, rh
	}
	if sw <= spec.W && sh <= spec.H {
		return sw, sh, sw, sh
	}
	f := min(fx, fy)
	tw = clamp(int(math.Round(float64(sw)*f)), 1, spec.W)
	th = clamp(int(math.Round(float64(sh)*f)), 1, spec.H)
	return tw, th, sw, sh
}

func clamp(v, lo, hi int) int { return max(lo, min(v, hi)) }

// maxKernelBuffer bounds the temporary buffer of x/image/draw's kernel scalers
// (destination width × source height × 32 bytes); bigger reductions use the
// streaming areaResize.
const maxKernelBuffer = 8 << 20

// scaledImage is the whole source scaled by (sx, sy), kept to render smaller
// thumbnails from instead of the full-size image.
type scaledImage struct {
	img    *image.RGBA
	sx, sy float64
}

// renderThumbnails renders one thumbnail per spec from the decoded source, in
// display orientation. Specs are rendered largest first, and each "scale" result
// becomes a source for smaller ones: scaling a 12-megapixel photo down once, then
// 800×600 down to 96×96, costs far less than going back to the original each time.
func renderThumbnails(src image.Image, info *imageInfo, specs []thumbSpec) []*image.RGBA {
	dw, dh := info.displaySize()
	type job struct {
		i              int
		tw, th, rw, rh int // raw orientation
		need           float64
		wholeImage     bool
	}
	jobs := make([]job, len(specs))
	for i, s := range specs {
		tw, th, rw, rh := thumbGeometry(dw, dh, s)
		if info.rotated() {
			tw, th, rw, rh = th, tw, rh, rw
		}
		jobs[i] = job{i: i, tw: tw, th: th, rw: rw, rh: rh,
			need:       max(float64(tw)/float64(rw), float64(th)/float64(rh)),
			wholeImage: rw == info.RawW && rh == info.RawH}
	}
	slices.SortStableFunc(jobs, func(a, b job) int {
		switch {
		case a.need > b.need:
			return -1
		case a.need < b.need:
			return 1
		}
		return 0
	})
	out := make([]*image.RGBA, len(specs))
	var inters []scaledImage
	for _, j := range jobs {
		base, sx, sy := src, 1.0, 1.0
		bestArea := math.MaxInt
		for _, in := range inters {
			// Usable when it has at least the resolution this thumbnail needs.
			if in.sx*float64(j.rw) >= float64(j.tw)-0.5 && in.sy*float64(j.rh) >= float64(j.th)-0.5 {
				if a := in.img.Rect.Dx() * in.img.Rect.Dy(); a < bestArea {
					base, sx, sy, bestArea = in.img, in.sx, in.sy, a
				}
			}
		}
		bb := base.Bounds()
		bw := clamp(int(math.Round(float64(j.rw)*sx)), 1, bb.Dx())
		bh := clamp(int(math.Round(float64(j.rh)*sy)), 1, bb.Dy())
		x0, y0 := bb.Min.X+(bb.Dx()-bw)/2, bb.Min.Y+(bb.Dy()-bh)/2
		region := image.Rect(x0, y0, x0+bw, y0+bh)
		dst := image.NewRGBA(image.Rect(0, 0, j.tw, j.th))
		switch {
		case bw == j.tw && bh == j.th:
			draw.Draw(dst, dst.Rect, base, region.Min, draw.Src)
		case int64(j.tw)*int64(bh)*32 > maxKernelBuffer:
			areaResize(dst, base, region)
		default:
			xdraw.CatmullRom.Scale(dst, dst.Rect, base, region, xdraw.Src, nil)
		}
		if j.wholeImage {
			inters = append(inters, scaledImage{img: dst, sx: float64(j.tw) / float64(info.RawW), sy: float64(j.th) / float64(info.RawH)})
		}
		out[j.i] = orient(dst, info.Orientation)
	}
	return out
}

// orient turns an image in stored orientation into display orientation, per the
// EXIF Orientation value o.
func orient(src *image.RGBA, o int) *image.RGBA {
	if o <= 1 || o > 8 {
		return src
	}
	rw, rh := src.Rect.Dx(), src.Rect.Dy()
	w, h := rw, rh
	if o >= 5 {
		w, h = rh, rw
	}
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			var sx, sy int
			switch o {
			case 2: // mirrored horizontally
				sx, sy = rw-1-x, y
			case 3: // rotated 180°
				sx, sy = rw-1-x, rh-1-y
			case 4: // mirrored vertically
				sx, sy = x, rh-1-y
			case 5: // transposed
				sx, sy = y, x
			case 6: // needs 90° clockwise
				sx, sy = y, rh-1-x
			case 7: // transversed
				sx, sy = rw-1-y, rh-1-x
			case 8: // needs 90° anticlockwise
				sx, sy = rw-1-y, x
			}
			si := src.PixOffset(src.Rect.Min.X+sx, src.Rect.Min.Y+sy)
			di := dst.PixOffset(x, y)
			copy(dst.Pix[di:di+4], src.Pix[si:si+4])
		}
	}
	return dst
}

// encodeThumbnail encodes a thumbnail: JPEG for photographic sources (JPEG, and
// lossy WebP, which decodes to YCbCr) without transparency, PNG otherwise.
func encodeThumbnail(img *image.RGBA, photo bool) ([]byte, string, error) {
	var buf bytes.Buffer
	if photo && img.Opaque() {
		if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 85}); err != nil {
			return nil, "", fmt.Errorf("encoding JPEG thumbnail: %w", err)
		}
		return buf.Bytes(), "image/jpeg", nil
	}
	if err := (&png.Encoder{CompressionLevel: png.DefaultCompression}).Encode(&buf, img); err != nil {
		return nil, "", fmt.Errorf("encoding PNG thumbnail: %w", err)
	}
	return buf.Bytes(), "image/png", nil
}

// isPhoto reports whether a decoded source is photographic (YCbCr).
func isPhoto(img image.Image) bool {
	_, ok := img.(*image.YCbCr)
	return ok
}
