// Per-ray and per-pixel arithmetic of Joseph's method in 2D.
//
// This header is the single copy of the discretisation: the CPU loops
// (joseph2d_cpu.cpp) and the CUDA kernels (joseph2d_cuda.cu) both call these
// functions. It includes nothing from torch so that nvcc can compile it on a
// machine with a CPU-only torch.
//
// Joseph's method (P. M. Joseph, IEEE TMI 1(3), 1982): a ray is sampled once
// per column of the image (or once per row, whichever axis the ray is more
// aligned with, measured in *index* units so anisotropic pixels work), the
// image is interpolated linearly across the other axis, and each sample is
// weighted by the ray length per column (or row). The forward projection is
//
//     y[ray] = sum_j  w * sum_i  tri(alpha + beta * j - i) * x[i, j]     (x-major)
//
// with tri(t) = max(0, 1 - |t|). Its transpose uses the very same weights,
// which is what makes the pair exactly matched.
#pragma once

#include <math.h>

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define KO_HD __host__ __device__ __forceinline__
#else
#define KO_HD inline
#endif

namespace known_ops {

// Geometry kinds understood by the kernels (mirrored in known_ops/_ops.py).
enum GeometryKind : int64_t {
  kParallel = 0,   // per view: ray direction r, detector centre d, pixel step u
  kFanFlat = 1,    // per view: source s, detector centre d, pixel step u
  kFanCurved = 2,  // per view: source s, centre d of an arc around s, tangent step u (arc length)
};

// One ray, written in image index coordinates.  For an x-major ray the
// continuous row index at column j is  alpha + beta * j  and every column
// contributes w (mm per column); a y-major ray swaps rows and columns.
// Stored as RAY_FIELDS consecutive scalars in the ray table.
constexpr int RAY_FIELDS = 4;  // alpha, beta, w, x_major (1 or 0)

// Per-view map from a point in index coordinates (row i, column j) to the
// continuous detector bin it projects to along the view's rays:
//   t = (n0 + ni * i + nj * j) / (d0 + di * i + dj * j)
//   bin = atan(t) * arc_scale + centre     (curved)
//   bin = t + centre                       (parallel, flat)
// Stored as VIEW_FIELDS consecutive scalars in the view table.
constexpr int VIEW_FIELDS = 8;  // n0, ni, nj, d0, di, dj, arc_scale (0 = not curved), centre

// Precision-preserving math for float and double on host and device (a plain
// fabs(float) on the host would round-trip through double).
KO_HD float abs_(float x) { return fabsf(x); }
KO_HD double abs_(double x) { return fabs(x); }
KO_HD float floor_(float x) { return floorf(x); }
KO_HD double floor_(double x) { return floor(x); }
KO_HD float ceil_(float x) { return ceilf(x); }
KO_HD double ceil_(double x) { return ceil(x); }
KO_HD float atan_(float x) { return atanf(x); }
KO_HD double atan_(double x) { return atan(x); }

struct Vec2 {
  double x, y;
};
KO_HD double cross(Vec2 a, Vec2 b) { return a.x * b.y - a.y * b.x; }
KO_HD double dot(Vec2 a, Vec2 b) { return a.x * b.x + a.y * b.y; }

// Pixel grid: voxel centre of (i, j) is  x = (j - (nx-1)/2) sx + ox,
// y = (i - (ny-1)/2) sy + oy  (docs/conventions.md).
struct Grid2D {
  int64_t ny, nx;
  double sy, sx, oy, ox;
};

// World point -> continuous index coordinates (column, row).
KO_HD Vec2 world_to_index(const Grid2D& g, Vec2 p) {
  return Vec2{(p.x - g.ox) / g.sx + 0.5 * (g.nx - 1), (p.y - g.oy) / g.sy + 0.5 * (g.ny - 1)};
}

// Origin and direction (world, mm) of the ray through detector bin `bin`.
// `vec` holds the view's 6 numbers in ASTRA's parallel_vec / fanflat_vec layout.
KO_HD void ray_of_bin(int64_t kind, const double* vec, int64_t n_det, int64_t bin, Vec2* origin,
                      Vec2* dir) {
  const Vec2 a{vec[0], vec[1]}, d{vec[2], vec[3]}, u{vec[4], vec[5]};
  const double c = bin - 0.5 * (n_det - 1);
  if (kind == kParallel) {
    *origin = Vec2{d.x + c * u.x, d.y + c * u.y};
    *dir = a;
  } else if (kind == kFanFlat) {
    *origin = a;
    *dir = Vec2{d.x + c * u.x - a.x, d.y + c * u.y - a.y};
  } else {  // kFanCurved: bins equally spaced in angle on an arc of radius |d - s|
    const Vec2 central{d.x - a.x, d.y - a.y};
    const double radius = sqrt(dot(central, central));
    const double ulen = sqrt(dot(u, u));
    const double gamma = c * ulen / radius;
    const double cg = cos(gamma), sg = sin(gamma);
    *origin = a;
    *dir = Vec2{cg * central.x + sg * u.x * radius / ulen, cg * central.y + sg * u.y * radius / ulen};
  }
}

// Ray table entry for one detector bin (see RAY_FIELDS).  Computed in double.
KO_HD void make_ray_line(int64_t kind, const double* vec, int64_t n_det, int64_t bin, const Grid2D& g,
                         double* out) {
  Vec2 origin, dir;
  ray_of_bin(kind, vec, n_det, bin, &origin, &dir);
  const Vec2 o = world_to_index(g, origin);
  const Vec2 D{dir.x / g.sx, dir.y / g.sy};  // direction in index units
  const double len = sqrt(dot(dir, dir));
  if (fabs(D.x) >= fabs(D.y)) {  // x-major: one sample per column
    const double beta = D.y / D.x;
    out[0] = o.y - o.x * beta;
    out[1] = beta;
    out[2] = len / fabs(D.x);
    out[3] = 1.0;
  } else {  // y-major: one sample per row
    const double beta = D.x / D.y;
    out[0] = o.x - o.y * beta;
    out[1] = beta;
    out[2] = len / fabs(D.y);
    out[3] = 0.0;
  }
}

// View table entry (see VIEW_FIELDS): the projective map index point -> bin.
KO_HD void make_view_map(int64_t kind, const double* vec, int64_t n_det, const Grid2D& g, double* out) {
  const Vec2 a{vec[0], vec[1]}, d{vec[2], vec[3]}, u{vec[4], vec[5]};
  // World point of index (i, j): p = p0 + i * ei + j * ej.
  const Vec2 p0{-0.5 * (g.nx - 1) * g.sx + g.ox, -0.5 * (g.ny - 1) * g.sy + g.oy};
  const Vec2 ei{0.0, g.sy}, ej{g.sx, 0.0};
  if (kind == kParallel) {
    // p + t r = d + c u  =>  c = cross(r, p - d) / cross(r, u)
    const double den = cross(a, u);
    out[0] = cross(a, Vec2{p0.x - d.x, p0.y - d.y}) / den;
    out[1] = cross(a, ei) / den;
    out[2] = cross(a, ej) / den;
    out[3] = 1.0;
    out[4] = 0.0;
    out[5] = 0.0;
    out[6] = 0.0;
  } else if (kind == kFanFlat) {
    // s + t (p - s) = d + c u  =>  c = cross(p - s, s - d) / cross(p - s, u)
    const Vec2 sd{a.x - d.x, a.y - d.y};
    const Vec2 q0{p0.x - a.x, p0.y - a.y};
    out[0] = cross(q0, sd);
    out[1] = cross(ei, sd);
    out[2] = cross(ej, sd);
    out[3] = cross(q0, u);
    out[4] = cross(ei, u);
    out[5] = cross(ej, u);
    out[6] = 0.0;
  } else {
    // gamma = atan(<p - s, e_u> / <p - s, e_c>), bin offset = gamma * radius / |u|
    const Vec2 central{d.x - a.x, d.y - a.y};
    const double radius = sqrt(dot(central, central));
    const double ulen = sqrt(dot(u, u));
    const Vec2 ec{central.x / radius, central.y / radius}, eu{u.x / ulen, u.y / ulen};
    const Vec2 q0{p0.x - a.x, p0.y - a.y};
    out[0] = dot(q0, eu);
    out[1] = dot(ei, eu);
    out[2] = dot(ej, eu);
    out[3] = dot(q0, ec);
    out[4] = dot(ei, ec);
    out[5] = dot(ej, ec);
    out[6] = radius / ulen;
  }
  out[7] = 0.5 * (n_det - 1);
}

// Continuous detector bin hit by the view's ray through index point (i, j).
template <typename T>
KO_HD T bin_of_point(const T* view, T i, T j) {
  const T num = view[0] + view[1] * i + view[2] * j;
  const T den = view[3] + view[4] * i + view[5] * j;
  if (view[6] != T(0)) return atan_(num / den) * view[6] + view[7];
  return num / den + view[7];
}

// Why a view table entry (VIEW_FIELDS values, in the data's precision T)
// cannot be used with an ny x nx image; nullptr when it can.  Checked by the
// CPU bindings of the ops that read the view table (the gather adjoint, the
// voxel-driven pair): its numbers must be finite, and the image grown by one
// pixel must lie strictly on one side of the line through the source parallel
// to the detector (the map's denominator keeps its sign), as known_ops checks
// for the geometries it builds tables for.
template <typename T>
KO_HD const char* view_map_problem(const T* view, int64_t ny, int64_t nx) {
  for (int q = 0; q < VIEW_FIELDS; ++q)
    if (!(fabs(double(view[q])) <= 1.7976931348623157e308)) return "it holds NaN or infinite values";
  if (!(view[6] >= T(0))) return "its arc scale is negative";
  int sign = 0;
  for (int corner = 0; corner < 4; ++corner) {
    const double i = (corner & 1) ? double(ny) : -1.0, j = (corner & 2) ? double(nx) : -1.0;
    const double den = double(view[3]) + double(view[4]) * i + double(view[5]) * j;
    const int s = den > 0.0 ? 1 : (den < 0.0 ? -1 : 0);
    if (s == 0 || (sign != 0 && s != sign))
      return "the image (grown by one pixel) does not lie on one side of the source";
    sign = s;
  }
  return nullptr;
}

// Joseph interpolation weight of a ray sample at continuous index `pos` for
// the integer index `k` of the interpolated axis: the linear-interpolation
// "hat" function tri(pos - k).
template <typename T>
KO_HD T hat(T pos, T k) {
  const T t = T(1) - abs_(pos - k);
  return t > T(0) ? t : T(0);
}

// clip_march's range alone, without its status: for the 3D set-up and loops,
// where a fuller check would only repeat work at every ray set-up.  Still
// safe on any input: a NaN (from alpha, beta, lo or hi) propagates into m0 or
// m1 and empties the range, and infinities leave m0 > m1.
KO_HD void clip_march_known(double alpha, double beta, double lo, double hi, int64_t n_major, int64_t* first,
                            int64_t* last) {
  double m0 = 0.0, m1 = double(n_major - 1);
  if (beta != 0.0) {
    double a = (lo - alpha) / beta;
    double b = (hi - alpha) / beta;
    if (a > b) {
      const double t = a;
      a = b;
      b = t;
    }
    m0 = a <= m0 ? m0 : a;  // (NaN: a)
    m1 = b >= m1 ? m1 : b;
  } else if (!(alpha >= lo && alpha <= hi)) {
    *first = 0;
    *last = -1;
    return;
  }
  if (!(m0 <= m1)) {
    *first = 0;
    *last = -1;
    return;
  }
  *first = int64_t(ceil(m0));
  *last = int64_t(floor(m1));
}

// Machine epsilon of the precision the kernels compute positions in.
template <typename T>
KO_HD constexpr double epsilon_of() {
  return sizeof(T) == 4 ? 1.1920928955078125e-7 : 2.220446049250313e-16;
}

// What clip_march found (its return value; callers that only march may ignore
// it, since an unusable ray gets an empty range).
enum MarchStatus : int {
  kMarchOk = 0,             // [first, last] is the range (possibly empty)
  kMarchNonFinite = 1,      // alpha, beta, lo or hi is NaN or infinite: no sample
  kMarchIllConditioned = 2  // the ray reaches the image, but alpha + beta m cannot be
                            // computed in T to within the kernels' margins: no sample
};

// Range [first, last] (inclusive) of major-axis indices m in [0, n_major) at
// which the sample alpha + beta * m lies in [lo, hi] of the minor axis.
// Used to clip the ray march to the (zero-padded) image; the caller chooses
// lo/hi with a margin (at least 0.5 index units) so that rounding can only
// add zero-weight samples.
//
// Memory safety rests on this function: every kernel converts the positions
// of the samples in [first, last] to integer indices, so a ray whose numbers
// are not finite, or so large that the rounding of alpha + beta m in T could
// exceed the margin (raw tables; the tables the library builds never are),
// gets an empty range and a status that says why (the CPU bindings turn it
// into an error).  The comparisons are written so that NaN fails them.
template <typename T>
KO_HD int clip_march(T alpha, T beta, T lo, T hi, int64_t n_major, int64_t* first, int64_t* last) {
  *first = 0;
  *last = -1;
  const double a0 = double(alpha), b0 = double(beta), lo0 = double(lo), hi0 = double(hi);
  constexpr double kHuge = 1e300;  // beyond this, the differences below could overflow
  if (!(fabs(a0) <= kHuge && fabs(b0) <= kHuge && fabs(lo0) <= kHuge && fabs(hi0) <= kHuge))
    return kMarchNonFinite;  // also NaN and infinities
  double m0 = 0.0, m1 = double(n_major - 1);
  if (b0 != 0.0) {
    double a = (lo0 - a0) / b0;
    double b = (hi0 - a0) / b0;
    if (a > b) {
      const double t = a;
      a = b;
      b = t;
    }
    m0 = a > m0 ? a : m0;
    m1 = b < m1 ? b : m1;
  } else if (!(a0 >= lo0 && a0 <= hi0)) {
    return kMarchOk;
  }
  if (!(m0 <= m1)) return kMarchOk;
  // Rounding error of alpha + beta m in T (with or without an fma, and with
  // alpha shifted by a few units first, as some loops do): at most about
  // eps / 2 times (|alpha| + |beta m| + |position| + a few), which must stay
  // below the margin of 0.5; twice that error is allowed for here.
  const double size = fabs(a0) + fabs(b0) * m1 + fabs(lo0) + fabs(hi0) + 4.0;
  if (!(size * epsilon_of<T>() <= 0.5)) return kMarchIllConditioned;
  *first = int64_t(ceil(m0));
  *last = int64_t(floor(m1));
  return kMarchOk;
}

// Whether a ray of a 2D ray table (RAY_FIELDS values: alpha, beta, w, x_major)
// can be marched on an ny x nx image: its numbers are finite and its
// positions can be computed in T to within the kernels' margin (the same test
// as clip_march, with the kernels' bounds).  A quick sufficient test first,
// so that checking a whole table costs next to nothing beside a projection.
template <typename T>
KO_HD int ray_line_status(const T* ray, int64_t ny, int64_t nx) {
  const bool x_major = ray[3] != T(0);
  const int64_t n_minor = x_major ? ny : nx, n_major = x_major ? nx : ny;
  const double a = double(ray[0]), b = double(ray[1]), w = double(ray[2]);
  if (!(fabs(w) <= 1e300)) return kMarchNonFinite;
  if (fabs(a) + fabs(b) * double(n_major) + 2.0 * double(n_minor) + 8.0 <= 0.5 / epsilon_of<T>()) return kMarchOk;
  int64_t first, last;
  return clip_march<T>(ray[0], ray[1], T(-1.5), T(n_minor) + T(0.5), n_major, &first, &last);
}

// Adjoint of one view at pixel (i, j), gathered from the sinogram row `sino`:
// the sum over every ray of the view of (its weight at the pixel) * sino[ray].
// This is the transpose of the ray-driven forward, written pixel by pixel so
// that it needs no atomics (the CUDA back-projection; also run on the CPU in
// the tests).  Candidate rays are found by projecting the two ends of the
// pixel's support segment on the major axis onto the detector.
template <typename T>
KO_HD T gather_view(const T* rays, const T* view, const T* sino, int64_t n_det, int64_t i, int64_t j) {
  T acc = T(0);
  const T ti = T(i), tj = T(j);
  for (int pass = 0; pass < 2; ++pass) {
    // pass 0: x-major rays cross column j within rows (i-1, i+1);
    // pass 1: y-major rays cross row i within columns (j-1, j+1).
    const T b0 = pass == 0 ? bin_of_point(view, ti - T(1), tj) : bin_of_point(view, ti, tj - T(1));
    const T b1 = pass == 0 ? bin_of_point(view, ti + T(1), tj) : bin_of_point(view, ti, tj + T(1));
    T lo = b0 < b1 ? b0 : b1;
    T hi = b0 < b1 ? b1 : b0;
    if (!(hi >= T(-2)) || !(lo <= T(n_det + 1))) continue;  // also skips NaN
    // Clamp before converting, so that a far-away bin cannot overflow int64.
    lo = lo < T(-2) ? T(-2) : lo;
    hi = hi > T(n_det + 1) ? T(n_det + 1) : hi;
    int64_t c0 = int64_t(floor_(lo)) - 1;
    int64_t c1 = int64_t(ceil_(hi)) + 1;
    c0 = c0 < 0 ? 0 : c0;
    c1 = c1 > n_det - 1 ? n_det - 1 : c1;
    for (int64_t c = c0; c <= c1; ++c) {
      const T* r = rays + c * RAY_FIELDS;
      const bool x_major = r[3] != T(0);
      if (x_major != (pass == 0)) continue;
      const T pos = r[0] + r[1] * (pass == 0 ? tj : ti);
      acc += r[2] * hat(pos, pass == 0 ? ti : tj) * sino[c];
    }
  }
  return acc;
}

}  // namespace known_ops
