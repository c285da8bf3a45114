// Per-voxel arithmetic of the voxel-driven projector pair (model="voxel").
//
// The back-projection interpolates each view's detector at the voxel's
// projection (linearly in 2D, bilinearly in 3D), the standard FBP/FDK
// back-projector; its exact transpose, the forward, splats every voxel onto
// the detector with the same weights.  Each voxel-view pair carries the weight
//
//   w = voxel measure * |grad b|                 (2D; b: detector bin)
//   w = voxel measure * |grad col x grad row|    (3D)
//
// (gradients in world units), the density of rays across the ray at the voxel,
// so that the forward approximates line integrals (coarea formula: for a
// uniform object, sum_voxels w hat(b - c) ~ the chord length of ray c).
// Positions use the view maps of joseph2d.h / joseph3d.h, so a voxel projects
// where the Joseph pair's rays say it does.
#pragma once

#include "joseph3d.h"

namespace known_ops {

KO_HD float sqrt_(float x) { return sqrtf(x); }
KO_HD double sqrt_(double x) { return sqrt(x); }

// The FDK weighting instead of the line-integral one: with fdk > 0 a
// voxel-view weight is fdk / L'^2, the caller choosing the per-view constant
// fdk so that this is D_so D_sd / L^2, the distance weight of fan-beam FBP and
// FDK: for flat detectors (and parallel beams) L' is the denominator of the
// view's map (proportional to the depth from the source along the central
// ray, Kak & Slaney's U); for curved ones the distance from the source
// (in 3D: from the axis through it), as the equiangular formula has it.

// 2D: the continuous bin b of pixel (i, j) in a view (VIEW_FIELDS table) and
// the pair's weight there; sy, sx: pixel size (mm).  CURVED: the view's
// arc_scale (view[6]) is not 0; FDK: fdk > 0.  (Template flags rather than
// branches, so that a loop over a row of pixels has no control flow and
// vectorises; voxel2d_bin picks them at run time.)
template <bool CURVED, bool FDK, typename T>
KO_HD T voxel2d_bin_as(const T* view, T sy, T sx, T i, T j, T fdk, T* weight) {
  const T num = view[0] + view[1] * i + view[2] * j;
  const T den = view[3] + view[4] * i + view[5] * j;
  const T t = num / den;
  T b, depth2 = den * den, arc = T(1);
  if (CURVED) {  // b = atan(t) * arc_scale + centre; num, den: coordinates of p - s
    arc = view[6] / (T(1) + t * t);  // db/dt
    b = atan_(t) * view[6] + view[7];
    depth2 += num * num;
  } else {
    b = t + view[7];
  }
  if (FDK) {
    *weight = fdk / depth2;
  } else {
    T gi = (view[1] - t * view[4]) / den, gj = (view[2] - t * view[5]) / den;  // dt/di, dt/dj
    if (CURVED) {
      gi *= arc;
      gj *= arc;
    }
    const T gy = gi / sy, gx = gj / sx;
    *weight = sy * sx * sqrt_(gy * gy + gx * gx);
  }
  return b;
}

// Calls visit(curved, fdk) with the run-time flags as std::bool_constant
// values, so that the callee picks the matching *_as<CURVED, FDK> instance:
// the one place where the four combinations are spelled out.
template <typename Visit>
KO_HD void with_voxel_flags(bool curved, bool fdk, const Visit& visit) {
  if (curved) {
    if (fdk)
      visit(std::true_type{}, std::true_type{});
    else
      visit(std::true_type{}, std::false_type{});
  } else if (fdk) {
    visit(std::false_type{}, std::true_type{});
  } else {
    visit(std::false_type{}, std::false_type{});
  }
}

template <typename T>
KO_HD T voxel2d_bin(const T* view, T sy, T sx, T i, T j, T fdk, T* weight) {
  T b;
  with_voxel_flags(view[6] != T(0), fdk > T(0), [&](auto curved, auto fdk_weighting) {
    b = voxel2d_bin_as<decltype(curved)::value, decltype(fdk_weighting)::value>(view, sy, sx, i, j, fdk, weight);
  });
  return b;
}

// Linear interpolation taps of position b on n bins: the lower index and the
// weight of the upper one; false when b is outside (-1, n) (or NaN).
template <typename T>
KO_HD bool linear_taps(T b, int64_t n, int64_t* lower, T* upper_weight) {
  if (!(b > T(-1) && b < T(n))) return false;
  const int64_t c = int64_t(b + T(2)) - 2;  // floor, as in taps_at
  *lower = c;
  *upper_weight = b - T(c);
  return true;
}

// The taps of pixel (i, j) on a 2D view's detector (n_det bins): lower bin c,
// weight f of c + 1, and the pair's weight w; false when it projects off it.
template <typename T>
KO_HD bool voxel2d_taps(const T* view, T sy, T sx, int64_t i, int64_t j, T fdk, int64_t n_det, int64_t* c, T* f,
                        T* w) {
  return linear_taps(voxel2d_bin(view, sy, sx, T(i), T(j), fdk, w), n_det, c, f);
}

// The line-integral weight of voxel3d_position_as: voxel volume * |grad col x
// grad row| (world units), from the map values nc, nr, nd at the voxel.
template <bool CURVED, typename T>
KO_HD T line_weight3d(const T* f, T nc, T nr, T nd, T rho2, T rho, T col, T row) {
  using namespace frame3;
  const T* mc = f + kMapCol;
  const T* mr = f + kMapRow;
  const T* md = f + kMapDen;
  T gc[3], gr[3];  // gradients of col and row in index coordinates (k, i, j)
  for (int q = 0; q < 3; ++q) {
    if (CURVED) {
      gc[q] = f[kColScale] * (nd * mc[q + 1] - nc * md[q + 1]) / rho2;
      gr[q] = f[kRowScale] * (mr[q + 1] / rho - nr * (nc * mc[q + 1] + nd * md[q + 1]) / (rho2 * rho));
    } else {
      gc[q] = (mc[q + 1] - col * md[q + 1]) / nd;
      gr[q] = (mr[q + 1] - row * md[q + 1]) / nd;
    }
  }
  // world gradients (divide by the spacing of each index axis), then |gc x gr|
  const T s0 = f[kSpacing], s1 = f[kSpacing + 1], s2 = f[kSpacing + 2];
  const T a0 = gc[0] / s0, a1 = gc[1] / s1, a2 = gc[2] / s2;
  const T b0 = gr[0] / s0, b1 = gr[1] / s1, b2 = gr[2] / s2;
  const T c0 = a1 * b2 - a2 * b1, c1 = a2 * b0 - a0 * b2, c2 = a0 * b1 - a1 * b0;
  return s0 * s1 * s2 * sqrt_(c0 * c0 + c1 * c1 + c2 * c2);
}

// 3D: the continuous detector position (col, row) of voxel (k, i, j) in a view
// (the map part of its frame, in T) and the pair's weight there.  CURVED: a
// cylindrical detector (the frame's col scale is not 0); FDK: fdk > 0
// (template flags, as for voxel2d_bin_as; voxel3d_position picks them).
template <bool CURVED, bool FDK, typename T>
KO_HD void voxel3d_position_as(const T* f, T k, T i, T j, T fdk, T* col, T* row, T* weight) {
  using namespace frame3;
  const T* mc = f + kMapCol;
  const T* mr = f + kMapRow;
  const T* md = f + kMapDen;
  const T nc = mc[0] + mc[1] * k + mc[2] * i + mc[3] * j;
  const T nr = mr[0] + mr[1] * k + mr[2] * i + mr[3] * j;
  const T nd = md[0] + md[1] * k + md[2] * i + md[3] * j;
  T depth2 = nd * nd;
  T rho2 = T(0), rho = T(0);
  if (CURVED) {  // cylinder: col = atan(nc/nd) Sc + Cm, row = nr / rho Sr + Rm
    rho2 = nc * nc + nd * nd;
    rho = sqrt_(rho2);
    depth2 = rho2;
    *col = atan_(nc / nd) * f[kColScale] + f[kColMid];
    *row = nr / rho * f[kRowScale] + f[kRowMid];
  } else {  // projective: col = nc / nd, row = nr / nd
    *col = nc / nd;
    *row = nr / nd;
  }
  if (FDK)
    *weight = fdk / depth2;
  else
    *weight = line_weight3d<CURVED>(f, nc, nr, nd, rho2, rho, *col, *row);
}

template <typename T>
KO_HD void voxel3d_position(const T* f, T k, T i, T j, T fdk, T* col, T* row, T* weight) {
  with_voxel_flags(f[frame3::kColScale] != T(0), fdk > T(0), [&](auto curved, auto fdk_weighting) {
    voxel3d_position_as<decltype(curved)::value, decltype(fdk_weighting)::value>(f, k, i, j, fdk, col, row, weight);
  });
}

// Interpolated value of one view's detector row `bins` (n_det values) at the
// taps (c, f) of linear_taps, zero beyond its ends.
template <typename T>
KO_HD T interpolate_bins(const T* bins, int64_t n_det, int64_t c, T f) {
  T value = T(0);
  if (c >= 0) value += (T(1) - f) * bins[c];
  if (c + 1 < n_det) value += f * bins[c + 1];
  return value;
}

// The transpose of interpolate_bins: `add(pointer, amount)` spreads `value`
// onto the two taps (a plain += on the CPU, an atomic add on the GPU).
template <typename T, typename Add>
KO_HD void splat_bins(T* bins, int64_t n_det, int64_t c, T f, T value, const Add& add) {
  if (c >= 0) add(bins + c, value * (T(1) - f));
  if (c + 1 < n_det) add(bins + c + 1, value * f);
}

// The four bilinear taps of a voxel on a 3D view's detector (rows r, r + 1;
// cols c, c + 1; fr, fc the weights of r + 1 and c + 1) and the pair's weight
// w; hit is false when the voxel projects off the detector.
template <typename T>
struct DetectorTaps {
  bool hit;
  int64_t r, c;
  T fr, fc, w;
};

// The taps of a detector position (col, row) with the pair's weight w.
template <typename T>
KO_HD DetectorTaps<T> detector_taps_at(T col, T row, T w, int64_t n_rows, int64_t n_cols) {
  DetectorTaps<T> t{};
  t.w = w;
  t.hit = linear_taps(col, n_cols, &t.c, &t.fc) && linear_taps(row, n_rows, &t.r, &t.fr);
  return t;
}

// The taps of voxel (k, i, j) in a view (its frame in T).
template <typename T>
KO_HD DetectorTaps<T> detector_taps(const T* frame_t, T fdk, int64_t k, int64_t i, int64_t j, int64_t n_rows,
                                    int64_t n_cols) {
  T col, row, w;
  voxel3d_position(frame_t, T(k), T(i), T(j), fdk, &col, &row, &w);
  return detector_taps_at(col, row, w, n_rows, n_cols);
}

// Bilinear interpolation of one view's detector (n_rows x n_cols) at the
// taps, zero outside it (without the weight w).
template <typename T>
KO_HD T interpolate_detector(const T* view, int64_t n_rows, int64_t n_cols, const DetectorTaps<T>& d) {
  const bool r0 = d.r >= 0, r1 = d.r + 1 < n_rows, c0 = d.c >= 0, c1 = d.c + 1 < n_cols;
  const T* p = view + d.r * n_cols + d.c;
  T lower = T(0), upper = T(0);
  if (r0 && c0) lower += (T(1) - d.fc) * p[0];
  if (r0 && c1) lower += d.fc * p[1];
  if (r1 && c0) upper += (T(1) - d.fc) * p[n_cols];
  if (r1 && c1) upper += d.fc * p[n_cols + 1];
  return (T(1) - d.fr) * lower + d.fr * upper;
}

// The transpose of interpolate_detector: `value` spread onto the four taps with `add`.
template <typename T, typename Add>
KO_HD void splat_detector(T* view, int64_t n_rows, int64_t n_cols, const DetectorTaps<T>& d, T value,
                          const Add& add) {
  const bool r0 = d.r >= 0, r1 = d.r + 1 < n_rows, c0 = d.c >= 0, c1 = d.c + 1 < n_cols;
  T* o = view + d.r * n_cols + d.c;
  const T lower = value * (T(1) - d.fr), upper = value * d.fr;
  if (r0 && c0) add(o, lower * (T(1) - d.fc));
  if (r0 && c1) add(o + 1, lower * d.fc);
  if (r1 && c0) add(o + n_cols, upper * (T(1) - d.fc));
  if (r1 && c1) add(o + n_cols + 1, upper * d.fc);
}

}  // namespace known_ops
