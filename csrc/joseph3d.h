// Per-ray and per-voxel arithmetic of Joseph's method in 3D.
//
// The single copy of the 3D discretisation: the CPU loops (joseph3d_cpu.cpp)
// and the CUDA kernels (joseph3d_cuda.cu) call these functions.  No torch
// here, so nvcc compiles it on a machine with a CPU-only torch.
//
// Joseph's method in 3D: a ray is sampled once per slice of its *major* axis
// (the index axis along which it advances fastest, measured in index units so
// anisotropic voxels work); at each sample the volume is interpolated
// bilinearly in the plane of the two other (minor) axes b < c, and every
// sample is weighted by w, the ray's length (mm) per unit step of the major
// index:
//
//   y[ray] = w * sum_m  sum_{p,q} tri(alpha_b + beta_b m - p) tri(alpha_c + beta_c m - q) x[.., p, q, m, ..]
//
// with tri(t) = max(0, 1 - |t|).  The adjoint uses the same weights.
//
// Index coordinates are in array order (0: k along z, 1: i along y, 2: j along
// x); world coordinates (mm) are (x, y, z).
#pragma once

#include "joseph2d.h"  // KO_HD, precision-preserving math, clip_march, hat, GeometryKind

namespace known_ops {

// Per-view frame (float64), built once per geometry by make_frame3d:
//   ray part, in index coordinates: the ray of detector pixel (row, col) is
//     parallel:     origin O + col U + row V,  direction A
//     flat cone:    origin O,                  direction A + col U + row V
//     curved cone:  origin O,                  direction A + cos(g) U + sin(g) W + row V,
//                   g = (col - c_mid) * g_step  (angle on the cylinder)
//   map part: the projective map from an index point p = (k, i, j) to the
//   continuous detector position (col, row) of the view's ray through p:
//     n_x(p) = nx[0] + nx[1] k + nx[2] i + nx[3] j  for x in {col, row, den}
//     flat, parallel:  col = n_col / n_den,  row = n_row / n_den
//     curved:          col = atan(n_col / n_den) * col_scale + col_mid,
//                      row = n_row / sqrt(n_col^2 + n_den^2) * row_scale + row_mid
//     (n_col, n_den, n_row: coordinates of p - source along the tangent, the
//      centre direction and the axis of the cylinder, mm).
namespace frame3 {
constexpr int kKind = 0;
constexpr int kO = 1, kA = 4, kU = 7, kV = 10, kW = 13;  // 3 doubles each
constexpr int kGStep = 16, kCMid = 17;
constexpr int kSpacing = 18;                             // sz, sy, sx (mm per index unit)
constexpr int kMapCol = 21, kMapRow = 25, kMapDen = 29;  // 4 doubles each
constexpr int kColScale = 33, kRowScale = 34, kColMid = 35, kRowMid = 36;
constexpr int kShape = 37;     // nz, ny, nx of the grid the frame was built for
constexpr int kDetShape = 40;  // n_rows, n_cols of the detector it was built for
}  // namespace frame3
constexpr int FRAME3_FIELDS = 44;  // 42 used, padded to a multiple of 4

// Ray table entry (written by make_ray3d, read by every kernel).
namespace ray3 {
constexpr int kAlphaB = 0, kBetaB = 1, kAlphaC = 2, kBetaC = 3, kW = 4, kMajor = 5, kFirst = 6, kLast = 7;
}
constexpr int RAY3_FIELDS = 8;

// View vectors: 12 numbers in ASTRA's cone_vec / parallel3d_vec layout.
constexpr int VEC3_FIELDS = 12;

struct Vec3 {
  double x, y, z;
};
KO_HD Vec3 operator+(Vec3 a, Vec3 b) { return Vec3{a.x + b.x, a.y + b.y, a.z + b.z}; }
KO_HD Vec3 operator-(Vec3 a, Vec3 b) { return Vec3{a.x - b.x, a.y - b.y, a.z - b.z}; }
KO_HD Vec3 operator*(double s, Vec3 a) { return Vec3{s * a.x, s * a.y, s * a.z}; }
KO_HD double dot(Vec3 a, Vec3 b) { return a.x * b.x + a.y * b.y + a.z * b.z; }
KO_HD Vec3 cross(Vec3 a, Vec3 b) { return Vec3{a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x}; }
KO_HD double norm(Vec3 a) { return sqrt(dot(a, a)); }

// Element a (0, 1 or 2) of a 3-array, by selects: indexing a thread's array
// with a run-time index would put it in (slow) local memory on the GPU.
template <typename X>
KO_HD X pick3(const X* v, int a) {
  return a == 0 ? v[0] : (a == 1 ? v[1] : v[2]);
}
// The minor axes b < c of a ray with major axis `major` (array order).
KO_HD constexpr int minor_b(int major) { return major == 0 ? 1 : 0; }
KO_HD constexpr int minor_c(int major) { return major == 2 ? 1 : 2; }

// Voxel grid: centre of (k, i, j) at x = (j - (nx-1)/2) sx + ox, y = (i - (ny-1)/2) sy + oy,
// z = (k - (nz-1)/2) sz + oz  (docs/conventions.md).  Arrays in index order (z, y, x).
struct Grid3D {
  int64_t n[3];
  double s[3], o[3];
};

// World point -> index coordinates (k, i, j); world direction -> index direction.
KO_HD void point_to_index(const Grid3D& g, Vec3 p, double* out) {
  out[0] = (p.z - g.o[0]) / g.s[0] + 0.5 * (g.n[0] - 1);
  out[1] = (p.y - g.o[1]) / g.s[1] + 0.5 * (g.n[1] - 1);
  out[2] = (p.x - g.o[2]) / g.s[2] + 0.5 * (g.n[2] - 1);
}
KO_HD void direction_to_index(const Grid3D& g, Vec3 d, double* out) {
  out[0] = d.z / g.s[0];
  out[1] = d.y / g.s[1];
  out[2] = d.x / g.s[2];
}

// Affine map  p (index) -> dot(e, P(p) - q)  with P(p) the world point of index
// p, as 4 coefficients (constant, k, i, j).
KO_HD void affine_of_index(const Grid3D& g, Vec3 e, Vec3 q, double* out) {
  const Vec3 p0{-0.5 * (g.n[2] - 1) * g.s[2] + g.o[2], -0.5 * (g.n[1] - 1) * g.s[1] + g.o[1],
                -0.5 * (g.n[0] - 1) * g.s[0] + g.o[0]};
  out[0] = dot(e, p0 - q);
  out[1] = e.z * g.s[0];
  out[2] = e.y * g.s[1];
  out[3] = e.x * g.s[2];
}

// Rows of the inverse of the 3x3 matrix with columns (c0, c1, c2).
KO_HD void inverse_rows(Vec3 c0, Vec3 c1, Vec3 c2, Vec3* r0, Vec3* r1, Vec3* r2) {
  const double det = dot(c0, cross(c1, c2));
  *r0 = (1.0 / det) * cross(c1, c2);
  *r1 = (1.0 / det) * cross(c2, c0);
  *r2 = (1.0 / det) * cross(c0, c1);
}

// The frame of one view (see frame3) from its 12 vectors.  `kind` is a
// GeometryKind (kParallel, kFanFlat = flat cone, kFanCurved = cylindrical cone).
KO_HD void make_frame3d(int64_t kind, const double* vec, int64_t n_rows, int64_t n_cols, const Grid3D& g,
                        double* f) {
  using namespace frame3;
  for (int q = 0; q < FRAME3_FIELDS; ++q) f[q] = 0.0;
  const Vec3 a{vec[0], vec[1], vec[2]}, d{vec[3], vec[4], vec[5]}, u{vec[6], vec[7], vec[8]}, v{vec[9], vec[10], vec[11]};
  const double c_mid = 0.5 * (n_cols - 1), r_mid = 0.5 * (n_rows - 1);
  const Vec3 pixel00 = d - c_mid * u - r_mid * v;  // centre of pixel (row 0, col 0) on a flat detector
  f[kKind] = double(kind);
  for (int q = 0; q < 3; ++q) {
    f[kSpacing + q] = g.s[q];
    f[kShape + q] = double(g.n[q]);
  }
  f[kDetShape] = double(n_rows);
  f[kDetShape + 1] = double(n_cols);
  direction_to_index(g, u, f + kU);
  direction_to_index(g, v, f + kV);
  if (kind == kParallel) {
    point_to_index(g, pixel00, f + kO);
    direction_to_index(g, a, f + kA);
    // p + t a = pixel00 + col u + row v  =>  (col, row, -t) = [u v a]^-1 (p - pixel00)
    Vec3 r0, r1, r2;
    inverse_rows(u, v, a, &r0, &r1, &r2);
    affine_of_index(g, r0, pixel00, f + kMapCol);
    affine_of_index(g, r1, pixel00, f + kMapRow);
    f[kMapDen] = 1.0;
  } else if (kind == kFanFlat) {
    point_to_index(g, a, f + kO);
    direction_to_index(g, pixel00 - a, f + kA);
    // a + t (p - a) = pixel00 + col u + row v  =>  (col, row, 1) ~ [u v (pixel00 - a)]^-1 (p - a)
    Vec3 r0, r1, r2;
    inverse_rows(u, v, pixel00 - a, &r0, &r1, &r2);
    affine_of_index(g, r0, a, f + kMapCol);
    affine_of_index(g, r1, a, f + kMapRow);
    affine_of_index(g, r2, a, f + kMapDen);
  } else {  // cylinder through the source a along v; d on it; u tangent (arc length per column)
    const Vec3 h = d - a;
    const double vlen = norm(v), ulen = norm(u);
    const Vec3 ev = (1.0 / vlen) * v, eu = (1.0 / ulen) * u;
    const Vec3 h_axial = dot(h, ev) * ev;
    const Vec3 h_radial = h - h_axial;
    const double radius = norm(h_radial);
    const Vec3 ec = (1.0 / radius) * h_radial;
    point_to_index(g, a, f + kO);
    direction_to_index(g, h_axial - r_mid * v, f + kA);
    direction_to_index(g, radius * ec, f + kU);
    direction_to_index(g, radius * eu, f + kW);
    f[kGStep] = ulen / radius;
    f[kCMid] = c_mid;
    affine_of_index(g, eu, a, f + kMapCol);
    affine_of_index(g, ev, a, f + kMapRow);
    affine_of_index(g, ec, a, f + kMapDen);
    f[kColScale] = radius / ulen;
    f[kRowScale] = radius / vlen;
    f[kColMid] = c_mid;
    f[kRowMid] = r_mid - dot(h, ev) / vlen;
  }
}

// Ray table entry of detector pixel (row, col) of a view (see ray3), in float64.
// The major axis is the one of largest |direction| in index units; ties go to
// the later axis (x before y before z), as in 2D.  [first, last] is the range
// of major indices at which the sample can touch the volume.
//
// The frame must be usable (frame3d_setup_problem, and its grid fields those
// of the volume): the CPU bindings check every frame (frame3d_problem) and
// the CUDA ray-table kernel checks each view's frame, writing empty rays
// (empty_ray3d) for a bad one, so the per-ray work stays what it was (this
// runs at every ray set-up).  For such a frame every entry is memory-safe:
// |beta| <= 1 by the choice of the major axis, so a ray that meets the volume
// has |alpha| <= n_b + 1 + n_major, and a NaN (a zero direction) empties the
// range in clip_march_known.
KO_HD void empty_ray3d(double* out) {
  for (int q = 0; q < RAY3_FIELDS; ++q) out[q] = 0.0;
  out[ray3::kLast] = -1.0;
}

KO_HD void make_ray3d(const double* f, int64_t row, int64_t col, double* out) {
  using namespace frame3;
  const int64_t kind = int64_t(f[kKind]);
  double o[3], dir[3];
  for (int q = 0; q < 3; ++q) {
    if (kind == kParallel) {
      o[q] = f[kO + q] + col * f[kU + q] + row * f[kV + q];
      dir[q] = f[kA + q];
    } else {
      o[q] = f[kO + q];
      dir[q] = f[kA + q] + row * f[kV + q];
    }
  }
  if (kind == kFanFlat) {
    for (int q = 0; q < 3; ++q) dir[q] += col * f[kU + q];
  } else if (kind == kFanCurved) {
    const double gamma = (col - f[kCMid]) * f[kGStep];
    const double cg = cos(gamma), sg = sin(gamma);
    for (int q = 0; q < 3; ++q) dir[q] += cg * f[kU + q] + sg * f[kW + q];
  }
  const double ad0 = fabs(dir[0]), ad1 = fabs(dir[1]), ad2 = fabs(dir[2]);
  const int major = (ad2 >= ad1 && ad2 >= ad0) ? 2 : (ad1 >= ad0 ? 1 : 0);
  const int b = minor_b(major), c = minor_c(major);
  const double d_major = pick3(dir, major), o_major = pick3(o, major);
  const double beta_b = pick3(dir, b) / d_major, beta_c = pick3(dir, c) / d_major;
  const double alpha_b = pick3(o, b) - o_major * beta_b, alpha_c = pick3(o, c) - o_major * beta_c;
  const double len_mm = sqrt(dir[0] * f[kSpacing] * dir[0] * f[kSpacing] +
                             dir[1] * f[kSpacing + 1] * dir[1] * f[kSpacing + 1] +
                             dir[2] * f[kSpacing + 2] * dir[2] * f[kSpacing + 2]);
  const double w = len_mm / fabs(d_major);
  const int64_t n_major = int64_t(pick3(f + kShape, major));
  // Samples whose interpolation footprint meets the volume have minor
  // positions in (-1, n); the margin only adds zero-weight samples.
  constexpr double kMargin = 0.01;
  int64_t first_b, last_b, first_c, last_c;
  clip_march_known(alpha_b, beta_b, -1.0 - kMargin, pick3(f + kShape, b) + kMargin, n_major, &first_b, &last_b);
  clip_march_known(alpha_c, beta_c, -1.0 - kMargin, pick3(f + kShape, c) + kMargin, n_major, &first_c, &last_c);
  out[ray3::kAlphaB] = alpha_b;
  out[ray3::kBetaB] = beta_b;
  out[ray3::kAlphaC] = alpha_c;
  out[ray3::kBetaC] = beta_c;
  out[ray3::kW] = w;
  out[ray3::kMajor] = double(major);
  out[ray3::kFirst] = double(first_b > first_c ? first_b : first_c);
  out[ray3::kLast] = double(last_b < last_c ? last_b : last_c);
}

// The march range [first, last] of a ray entry, clipped to a volume whose
// major axis has n_major slices.  The library's frames give ranges inside the
// volume they were built for; the clip keeps a raw frame built for a larger
// volume (which only the CPU bindings can detect) from reading outside this one.
template <typename T, typename I>
KO_HD void march_range(const T* ray, int64_t n_major, I* m0, I* m1) {
  const I first = I(ray[ray3::kFirst]), last = I(ray[ray3::kLast]);
  *m0 = first > I(0) ? first : I(0);
  *m1 = last < I(n_major - 1) ? last : I(n_major - 1);
}

// The ray table entry in the data's precision.
template <typename T>
KO_HD void make_ray3d_as(const double* f, int64_t row, int64_t col, T* out) {
  double r[RAY3_FIELDS];
  make_ray3d(f, row, col, r);
  for (int q = 0; q < RAY3_FIELDS; ++q) out[q] = T(r[q]);
}

// One sample of a ray, at major index m: the four bilinear taps.  Every
// kernel computes positions and weights with this function, so the forward
// and its transposes use bitwise the same numbers on one device.  I is the
// integer type of the indices (int64_t, or int32_t where the GPU knows the
// volume is small enough; the values, hence the weights, are the same).
template <typename T, typename I>
struct Taps {
  I p, q;    // lower tap indices along the minor axes b and c
  T wb, wc;  // weights of the upper taps (p + 1, q + 1); the lower ones get 1 - wb, 1 - wc
};
// Positions are > -2 inside a ray's [first, last], so the lower tap is found
// by truncating position + 2 (a conversion instead of a floor, which is a
// library call on x86-64 without SSE4.1).  Rounding of position + 2 can give a
// weight a hair outside [0, 1]; every kernel shares it, so the pair stays
// matched.
template <typename T, typename I>
KO_HD Taps<T, I> taps_at(const T* ray, I m) {
  const T pb = ray[ray3::kAlphaB] + ray[ray3::kBetaB] * T(m);
  const T pc = ray[ray3::kAlphaC] + ray[ray3::kBetaC] * T(m);
  const I ib = I(pb + T(2)) - 2, ic = I(pc + T(2)) - 2;
  return Taps<T, I>{ib, ic, pb - T(ib), pc - T(ic)};
}

// Weight of voxel (p, q) of the minor plane in the sample t (0 when outside its 2x2 footprint).
template <typename T, typename I>
KO_HD T tap_weight(const Taps<T, I>& t, I p, I q) {
  const I dp = p - t.p, dq = q - t.q;
  if (dp < 0 || dp > 1 || dq < 0 || dq > 1) return T(0);
  return (dp ? t.wb : T(1) - t.wb) * (dq ? t.wc : T(1) - t.wc);
}

// Sizes and strides of the major and minor axes of a ray in a volume whose
// index axes (k, i, j) have the memory strides `stride` (contiguous
// (nz, ny, nx): {ny nx, nx, 1}).
template <typename I = int64_t>
struct Axes3 {
  I n_b, n_c, stride_m, stride_b, stride_c;
};
template <typename I = int64_t>
KO_HD Axes3<I> axes_of(int major, const int64_t* n, const int64_t* stride) {
  const int b = minor_b(major), c = minor_c(major);
  return Axes3<I>{I(pick3(n, b)), I(pick3(n, c)), I(pick3(stride, major)), I(pick3(stride, b)), I(pick3(stride, c))};
}
// ... for a contiguous (nz, ny, nx) volume.
template <typename I = int64_t>
KO_HD Axes3<I> axes_of(int major, const int64_t* n) {
  const int64_t stride[3] = {n[1] * n[2], n[2], 1};
  return axes_of<I>(major, n, stride);
}

// Forward sum along one ray over major indices [m0, m1].
template <typename T, typename I>
KO_HD T march3d(const T* vol, const Axes3<I>& ax, const T* ray, I m0, I m1) {
  T acc = T(0);
  for (I m = m0; m <= m1; ++m) {
    const Taps<T, I> t = taps_at(ray, m);
    const I base = m * ax.stride_m + t.p * ax.stride_b + t.q * ax.stride_c;
    const T lb = T(1) - t.wb, lc = T(1) - t.wc;
    if (t.p >= 0 && t.p + 1 < ax.n_b && t.q >= 0 && t.q + 1 < ax.n_c) {
      acc += lb * (lc * vol[base] + t.wc * vol[base + ax.stride_c]) +
             t.wb * (lc * vol[base + ax.stride_b] + t.wc * vol[base + ax.stride_b + ax.stride_c]);
    } else {
      const bool p0 = t.p >= 0 && t.p < ax.n_b, p1 = t.p + 1 >= 0 && t.p + 1 < ax.n_b;
      const bool q0 = t.q >= 0 && t.q < ax.n_c, q1 = t.q + 1 >= 0 && t.q + 1 < ax.n_c;
      if (p0 && q0) acc += lb * lc * vol[base];
      if (p0 && q1) acc += lb * t.wc * vol[base + ax.stride_c];
      if (p1 && q0) acc += t.wb * lc * vol[base + ax.stride_b];
      if (p1 && q1) acc += t.wb * t.wc * vol[base + ax.stride_b + ax.stride_c];
    }
  }
  return acc * ray[ray3::kW];
}

// Transpose of march3d: adds value * weight to every tap, restricted to the
// voxels whose minor-b index lies in [b_lo, b_hi) (the CPU's slab of slices;
// pass 0, n_b for no restriction).
template <typename T, typename I>
KO_HD void scatter3d(T* vol, const Axes3<I>& ax, const T* ray, I m0, I m1, T value, I b_lo, I b_hi) {
  const T wv = value * ray[ray3::kW];
  for (I m = m0; m <= m1; ++m) {
    const Taps<T, I> t = taps_at(ray, m);
    const I base = m * ax.stride_m + t.p * ax.stride_b + t.q * ax.stride_c;
    const T lb = T(1) - t.wb, lc = T(1) - t.wc;
    const bool p0 = t.p >= b_lo && t.p < b_hi, p1 = t.p + 1 >= b_lo && t.p + 1 < b_hi;
    const bool q0 = t.q >= 0 && t.q < ax.n_c, q1 = t.q + 1 >= 0 && t.q + 1 < ax.n_c;
    if (p0 && q0) vol[base] += wv * (lb * lc);
    if (p0 && q1) vol[base + ax.stride_c] += wv * (lb * t.wc);
    if (p1 && q0) vol[base + ax.stride_b] += wv * (t.wb * lc);
    if (p1 && q1) vol[base + ax.stride_b + ax.stride_c] += wv * (t.wb * t.wc);
  }
}

// Evaluate the view's map (frame3 map part) at index point p: detector (col, row).
template <typename T>
KO_HD void detector_position(const T* map_col, const T* map_row, const T* map_den, T k, T i, T j, T* n_col, T* n_row,
                             T* n_den) {
  *n_col = map_col[0] + map_col[1] * k + map_col[2] * i + map_col[3] * j;
  *n_row = map_row[0] + map_row[1] * k + map_row[2] * i + map_row[3] * j;
  *n_den = map_den[0] + map_den[1] * k + map_den[2] * i + map_den[3] * j;
}

// Conservative detector box [col_lo, col_hi] x [row_lo, row_hi] hit by the
// view's rays through the convex hull of `n_pts` index points (k, i, j).  For
// flat detectors and parallel beams col and row are linear-fractional in the
// point, so their extremes over a polytope are at its vertices.  On a
// cylinder the column angle is too, but the row, n_row / sqrt(n_col^2 +
// n_den^2), is not: it is bounded with n_row at the vertices and the
// distance from the axis between min n_den (> 0 in front of the source) and
// its maximum at the vertices (a norm is convex).  Every point must lie in
// front of the source (the Python layer checks the volume).
template <int N, typename T>
KO_HD void detector_box(const T* f, const T (&pts)[N][3], T* col_lo, T* col_hi, T* row_lo, T* row_hi) {
  using namespace frame3;
  const bool curved = f[kColScale] != T(0);
  T clo = T(0), chi = T(0), rlo = T(0), rhi = T(0), den_lo = T(0), dist_hi = T(0);
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int q = 0; q < N; ++q) {
    T nc, nr, nd;
    detector_position(f + kMapCol, f + kMapRow, f + kMapDen, pts[q][0], pts[q][1], pts[q][2], &nc, &nr, &nd);
    T col, row;
    if (curved) {
      col = atan_(nc / nd);
      row = nr;
      const T dist = sqrt(nc * nc + nd * nd);
      den_lo = q == 0 || nd < den_lo ? nd : den_lo;
      dist_hi = q == 0 || dist > dist_hi ? dist : dist_hi;
    } else {
      col = nc / nd;
      row = nr / nd;
    }
    clo = q == 0 || col < clo ? col : clo;
    chi = q == 0 || col > chi ? col : chi;
    rlo = q == 0 || row < rlo ? row : rlo;
    rhi = q == 0 || row > rhi ? row : rhi;
  }
  if (curved) {
    // row / dist over row in [rlo, rhi], dist in [den_lo, dist_hi]: extremes at the corners.
    const T r0 = rlo / den_lo, r1 = rlo / dist_hi, r2 = rhi / den_lo, r3 = rhi / dist_hi;
    const T lo = r0 < r1 ? r0 : r1, hi = r2 > r3 ? r2 : r3;
    rlo = lo * f[kRowScale] + f[kRowMid];
    rhi = hi * f[kRowScale] + f[kRowMid];
    clo = clo * f[kColScale] + f[kColMid];
    chi = chi * f[kColScale] + f[kColMid];
  }
  *col_lo = clo;
  *col_hi = chi;
  *row_lo = rlo;
  *row_hi = rhi;
}

// Integer range [first, last] of detector indices in [0, n) covering [lo, hi]
// plus a small margin against rounding (first > last when empty).
template <typename T>
KO_HD void index_range(T lo, T hi, int64_t n, int64_t* first, int64_t* last) {
  constexpr double kMargin = 1e-3;
  const double a = double(lo) - kMargin, b = double(hi) + kMargin;
  if (!(b >= 0.0) || !(a <= double(n - 1))) {  // also catches NaN
    *first = 0;
    *last = -1;
    return;
  }
  *first = a <= 0.0 ? 0 : int64_t(ceil(a));
  *last = b >= double(n - 1) ? n - 1 : int64_t(floor(b));
}

// Copies half a ray table entry (4 values, 16- or 32-byte aligned: entries are
// RAY3_FIELDS = 8 values and tables start aligned) with vector loads on the
// GPU, where the gather reads many entries per voxel.
template <typename T>
KO_HD void load_half(const T* src, T* dst) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(T) == 4) {
    const float4 v = __ldg(reinterpret_cast<const float4*>(src));
    dst[0] = v.x;
    dst[1] = v.y;
    dst[2] = v.z;
    dst[3] = v.w;
    return;
  } else {
    const double2 lo = __ldg(reinterpret_cast<const double2*>(src));
    const double2 hi = __ldg(reinterpret_cast<const double2*>(src) + 1);
    dst[0] = lo.x;
    dst[1] = lo.y;
    dst[2] = hi.x;
    dst[3] = hi.y;
    return;
  }
#else
  for (int q = 0; q < 4; ++q) dst[q] = src[q];
#endif
}

// The part of gather_view3d for the view's rays of one major axis (a
// compile-time constant, so that every array index below is one too).
template <int MAJOR, typename T>
KO_HD T gather_pass3d(const T* f, const T* rays, const T* proj, int64_t n_rows, int64_t n_cols, const int32_t (&idx)[3]) {
  constexpr int b = minor_b(MAJOR), c = minor_c(MAJOR);
  T pts[4][3];
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int q = 0; q < 4; ++q) {
    pts[q][MAJOR] = T(idx[MAJOR]);
    pts[q][b] = T(idx[b] + ((q & 1) ? 1 : -1));
    pts[q][c] = T(idx[c] + ((q & 2) ? 1 : -1));
  }
  T clo, chi, rlo, rhi;
  detector_box(f, pts, &clo, &chi, &rlo, &rhi);
  int64_t c0, c1, r0, r1;
  index_range(clo, chi, n_cols, &c0, &c1);
  index_range(rlo, rhi, n_rows, &r0, &r1);
  const int32_t m = idx[MAJOR];
  T acc = T(0);
  for (int64_t row = r0; row <= r1; ++row) {
    for (int64_t col = c0; col <= c1; ++col) {
      const T* entry = rays + (row * n_cols + col) * RAY3_FIELDS;
      T ray[RAY3_FIELDS];
      load_half(entry + 4, ray + 4);  // w, major, first, last: enough to reject the ray
      if (int(ray[ray3::kMajor]) != MAJOR) continue;
      if (T(m) < ray[ray3::kFirst] || T(m) > ray[ray3::kLast]) continue;
      load_half(entry, ray);  // alpha_b, beta_b, alpha_c, beta_c
      const T w = tap_weight(taps_at(ray, m), idx[b], idx[c]);
      if (w != T(0)) acc += ray[ray3::kW] * w * proj[row * n_cols + col];
    }
  }
  return acc;
}

// Adjoint of one view at voxel (k, i, j), gathered from the view's projection
// `proj` (n_rows x n_cols) with its ray table `rays` (n_rows x n_cols x
// RAY3_FIELDS): the sum over the view's rays of (weight of the ray at the
// voxel) * proj[ray].  For each major axis present in the view
// (`majors` bit mask), the candidate rays are those through the 2x2 square
// around the voxel in the plane of the other two axes, found with detector_box.
template <typename T>
KO_HD T gather_view3d(const T* f, const T* rays, const T* proj, int64_t n_rows, int64_t n_cols, int majors, int64_t k,
                      int64_t i, int64_t j) {
  const int32_t idx[3] = {int32_t(k), int32_t(i), int32_t(j)};
  T acc = T(0);
  if (majors & 1) acc += gather_pass3d<0>(f, rays, proj, n_rows, n_cols, idx);
  if (majors & 2) acc += gather_pass3d<1>(f, rays, proj, n_rows, n_cols, idx);
  if (majors & 4) acc += gather_pass3d<2>(f, rays, proj, n_rows, n_cols, idx);
  return acc;
}

// Why a frame's numbers cannot be used for rays in precision T; nullptr when
// they can: finite, a known kind, positive spacings, a ray set-up that stays
// finite (make_ray3d) and detector maps representable in T.  The frames
// op checks what it builds (in float64; known_ops refuses float32 data for
// frames that do not fit float32); the CPU bindings check raw frames with
// frame3d_problem.
template <typename T>
KO_HD const char* frame3d_setup_problem(const double* f, int64_t n_rows, int64_t n_cols) {
  using namespace frame3;
  for (int q = 0; q <= kDetShape + 1; ++q)
    if (!(fabs(f[q]) <= 1.7976931348623157e308)) return "it holds NaN or infinite values";
  if (!(f[kKind] == 0.0 || f[kKind] == 1.0 || f[kKind] == 2.0)) return "its geometry kind is not 0, 1 or 2";
  for (int q = 0; q < 3; ++q)
    if (!(f[kSpacing + q] > 0.0)) return "its voxel spacing is not positive";
  // The ray set-up (make_ray3d): origins and directions in index units stay
  // finite, and so do the squares of the directions in mm.
  const double cols = double(n_cols) + 1.0, rows = double(n_rows) + 1.0;
  for (int q = 0; q < 3; ++q) {
    const double span = fabs(f[kA + q]) + fabs(f[kU + q]) * cols + fabs(f[kV + q]) * rows + fabs(f[kW + q]);
    if (!(fabs(f[kO + q]) + span <= 1e300)) return "its ray set-up overflows (index coordinates beyond 1e300)";
    if (!(span * f[kSpacing + q] <= 1e152)) return "its rays are longer than 1e152 mm (their squares overflow)";
  }
  // The parts the kernels compute in T (detector maps, scales, spacing).
  const double t_max = sizeof(T) == 4 ? 3.4028234663852886e38 : 1.7976931348623157e308;
  for (int q = kSpacing; q <= kRowMid; ++q)
    if (!(fabs(f[q]) <= t_max)) return "its detector map overflows the data's precision";
  return nullptr;
}

// Why a frame cannot be used with a (nz, ny, nx) volume and an n_rows x
// n_cols detector in precision T; nullptr when it can.  The CPU bindings
// raise on it (they read the frames without a device synchronisation); the
// CUDA ray-table kernel gives such a view empty rays, which is all the kernels
// can do, so that no frame makes them index outside their arrays.  The
// library's frames always pass: known_ops bounds the geometry's lengths and
// checks that the volume lies in front of the source.
template <typename T>
KO_HD const char* frame3d_problem(const double* f, int64_t nz, int64_t ny, int64_t nx, int64_t n_rows,
                                  int64_t n_cols) {
  using namespace frame3;
  if (const char* problem = frame3d_setup_problem<T>(f, n_rows, n_cols)) return problem;
  if (!(f[kShape] == double(nz) && f[kShape + 1] == double(ny) && f[kShape + 2] == double(nx)))
    return "it was built for another volume shape";
  if (!(f[kDetShape] == double(n_rows) && f[kDetShape + 1] == double(n_cols)))
    return "it was built for another detector shape";
  // Every voxel, and its neighbours, must project through the map's
  // denominator without a sign change (the volume grown by one voxel lies in
  // front of the source); the denominator is affine, so its corners decide.
  const double hi[3] = {double(nz), double(ny), double(nx)};
  for (int corner = 0; corner < 8; ++corner) {
    const double k = (corner & 1) ? hi[0] : -1.0, i = (corner & 2) ? hi[1] : -1.0, j = (corner & 4) ? hi[2] : -1.0;
    const double den = f[kMapDen] + f[kMapDen + 1] * k + f[kMapDen + 2] * i + f[kMapDen + 3] * j;
    if (!(den > 0.0)) return "the volume (grown by one voxel) does not lie in front of the source";
  }
  return nullptr;
}

}  // namespace known_ops
