package mediaapi

import (
	"image"
	"image/color"
	"math"
)

// Downscaling a full-size photo is where thumbnailing spends its memory: x/image/
// draw's kernel scalers keep a float64 RGBA buffer of (destination width × source
// height), 77 MB for a 4000×3000 photo going to 800×600. areaResize below streams
// instead, a few destination rows at a time, and is used for those big
// reductions; CatmullRom (sharper) is kept for the small ones from intermediates.

// axisWeights maps each destination index to the source indexes it covers and
// their weights: destination pixel i averages source interval [i·s, (i+1)·s), edge
// pixels weighted by how much of them is inside (a box filter).
type axisWeights struct {
	start  []int     // first source index of each destination index
	offset []int     // into weight, per destination index (len = dst+1)
	weight []float32 // the weights, each destination's summing to 1
}

func newAxisWeights(src, dst int) axisWeights {
	s := float64(src) / float64(dst)
	aw := axisWeights{start: make([]int, dst), offset: make([]int, dst+1), weight: make([]float32, 0, src+2*dst)}
	for i := 0; i < dst; i++ {
		lo, hi := float64(i)*s, float64(i+1)*s
		j0, j1 := int(math.Floor(lo)), min(int(math.Ceil(hi)), src)
		aw.start[i] = j0
		aw.offset[i] = len(aw.weight)
		for j := j0; j < j1; j++ {
			w := (math.Min(hi, float64(j+1)) - math.Max(lo, float64(j))) / s
			aw.weight = append(aw.weight, float32(w))
		}
	}
	aw.offset[dst] = len(aw.weight)
	return aw
}

// span returns the source start and weights of destination index i.
func (aw *axisWeights) span(i int) (int, []float32) {
	return aw.start[i], aw.weight[aw.offset[i]:aw.offset[i+1]]
}

// rowReader converts one row of a source region to premultiplied RGBA floats.
type rowReader func(y int, out []float32)

// newRowReader returns a converter for the region r of src, with fast paths for
// what the decoders produce.
func newRowReader(src image.Image, r image.Rectangle) rowReader {
	switch s := src.(type) {
	case *image.YCbCr:
		return func(y int, out []float32) {
			yi := s.YOffset(r.Min.X, y)
			for x := r.Min.X; x < r.Max.X; x++ {
				ci := s.COffset(x, y)
				rr, gg, bb := color.YCbCrToRGB(s.Y[yi], s.Cb[ci], s.Cr[ci])
				o := (x - r.Min.X) * 4
				out[o], out[o+1], out[o+2], out[o+3] = float32(rr), float32(gg), float32(bb), 255
				yi++
			}
		}
	case *image.RGBA:
		return func(y int, out []float32) {
			p := s.Pix[s.PixOffset(r.Min.X, y):]
			for i := range out {
				out[i] = float32(p[i])
			}
		}
	case *image.NRGBA:
		return func(y int, out []float32) {
			p := s.Pix[s.PixOffset(r.Min.X, y):]
			for i := 0; i < len(out); i += 4 {
				a := float32(p[i+3]) / 255
				out[i], out[i+1], out[i+2], out[i+3] = float32(p[i])*a, float32(p[i+1])*a, float32(p[i+2])*a, float32(p[i+3])
			}
		}
	case *image.Gray:
		return func(y int, out []float32) {
			p := s.Pix[s.PixOffset(r.Min.X, y):]
			for x := 0; x < len(out)/4; x++ {
				v := float32(p[x])
				out[4*x], out[4*x+1], out[4*x+2], out[4*x+3] = v, v, v, 255
			}
		}
	case *image.Paletted:
		pal := make([][4]float32, len(s.Palette))
		for i, c := range s.Palette {
			cr, cg, cb, ca := c.RGBA()
			pal[i] = [4]float32{float32(cr >> 8), float32(cg >> 8), float32(cb >> 8), float32(ca >> 8)}
		}
		return func(y int, out []float32) {
			p := s.Pix[s.PixOffset(r.Min.X, y):]
			for x := 0; x < len(out)/4; x++ {
				var c [4]float32
				if int(p[x]) < len(pal) {
					c = pal[p[x]]
				}
				copy(out[4*x:4*x+4], c[:])
			}
		}
	default:
		return func(y int, out []float32) {
			for x := r.Min.X; x < r.Max.X; x++ {
				cr, cg, cb, ca := src.At(x, y).RGBA()
				o := (x - r.Min.X) * 4
				out[o], out[o+1], out[o+2], out[o+3] = float32(cr>>8), float32(cg>>8), float32(cb>>8), float32(ca>>8)
			}
		}
	}
}

// areaResize scales region r of src down into all of dst by area averaging. Both
// sides of r must be at least as large as dst's.
func areaResize(dst *image.RGBA, src image.Image, r image.Rectangle) {
	dw, dh := dst.Rect.Dx(), dst.Rect.Dy()
	xw, yw := newAxisWeights(r.Dx(), dw), newAxisWeights(r.Dy(), dh)
	read := newRowReader(src, r)
	srcRow := make([]float32, r.Dx()*4)
	// hrow is one source row resampled horizontally; lastY remembers which, as the
	// row on a boundary between two destination rows serves both.
	hrow := make([]float32, dw*4)
	acc := make([]float32, dw*4)
	lastY := -1
	for y := 0; y < dh; y++ {
		clear(acc)
		sy0, wys := yw.span(y)
		for k, wy := range wys {
			sy := r.Min.Y + sy0 + k
			if sy != lastY {
				read(sy, srcRow)
				for x := 0; x < dw; x++ {
					sx0, wxs := xw.span(x)
					var cr, cg, cb, ca float32
					o := sx0 * 4
					for _, wx := range wxs {
						cr += srcRow[o] * wx
						cg += srcRow[o+1] * wx
						cb += srcRow[o+2] * wx
						ca += srcRow[o+3] * wx
						o += 4
					}
					hrow[4*x], hrow[4*x+1], hrow[4*x+2], hrow[4*x+3] = cr, cg, cb, ca
				}
				lastY = sy
			}
			for i, v := range hrow {
				acc[i] += v * wy
			}
		}
		p := dst.Pix[dst.PixOffset(dst.Rect.Min.X, dst.Rect.Min.Y+y):]
		for i, v := range acc {
			p[i] = uint8(min(max(v+0.5, 0), 255))
		}
	}
}
