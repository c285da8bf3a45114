// CPU loops of the 2D Joseph projector pair.  The definitions come from
// joseph2d.h; the inner loops (joseph2d_cpu_kernels.inc) are written once and
// compiled twice, portable and AVX2, and the AVX2 build is used when the
// processor has it (set KNOWN_OPS_SIMD=0 to force the portable loops).
//
// Forward: ray-driven.  One float image on a CPU with AVX2 (forward_ray_groups)
// takes the rays of a view 8 neighbours at a time: they sample one line of the
// image (a column for x-major rays, a row for y-major ones) at nearby places, so
// their taps come from two vector loads of the line and in-register permutes.
// Otherwise each ray is summed on its own (SIMD along the ray, with gathers),
// reading a zero-padded copy of the image as is (x-major rays) or transposed
// (y-major rays), so the inner loop needs no bounds checks.
//
// Adjoint: the literal transpose of the forward (the same positions and
// weights).  One image whose views each have rays of one kind (parallel beams)
// is summed by output lines (adjoint_lines_impl): each line is written by one
// work item, in a fixed order, with no private copies of the image.  Otherwise
// (batches, fan beams whose views mix both kinds) the rays scatter along their
// paths: views are split into a fixed number of chunks that scatter into private
// buffers, summed in chunk order.  Either way no atomics, and bitwise the same
// result whatever the number of threads.  (The CUDA adjoint gathers pixel by
// pixel instead, gather_view in joseph2d.h; the CPU runs that form too, as
// joseph2d_adjoint_gather, so the tests check the GPU's math.)
//
// Batches: groups of 8 (float) or 4 (double) images are interleaved so that
// each sample's arithmetic is shared by the group (image-lane kernels).
#include "joseph2d_cpu.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu_parallel.h"
#include "joseph2d.h"
#include "simd.h"

namespace known_ops {
namespace {

constexpr int64_t kPad = 2;  // zero rows on each side of the interpolated axis
// View chunks x image groups of the scatter adjoint.  Fixed (not the thread
// count) so that results do not depend on it; each chunk costs a private
// buffer to zero and to sum, and measured on 2 cores (256^2, 180 views) 2 or 4
// tasks were 1.3x (one image) to 2.4x (a batch of 16) faster than 8.
constexpr int64_t kAdjointTasks = 4;
// Major lines per work item of adjoint_lines_impl: the item's lines (a few
// KiB each) stay in cache while every view's rays are added to them.
constexpr int64_t kLinesPerItem = 16;

#define KO_KERNELS "joseph2d_cpu_kernels.inc"
#include "simd_builds.inc"  // namespaces portable and avx2

// Copies image (ny, nx) into `rows` ((ny + 2 kPad) x nx) and its transpose into
// `cols` ((nx + 2 kPad) x ny); the padding is zero.
template <typename T>
void pad_image(const T* img, int64_t ny, int64_t nx, T* rows, T* cols) {
  std::fill(rows, rows + kPad * nx, T(0));
  std::copy(img, img + ny * nx, rows + kPad * nx);
  std::fill(rows + (ny + kPad) * nx, rows + (ny + 2 * kPad) * nx, T(0));
  std::fill(cols, cols + kPad * ny, T(0));
  constexpr int64_t kBlock = 32;  // blocked transpose
  for (int64_t i0 = 0; i0 < ny; i0 += kBlock)
    for (int64_t j0 = 0; j0 < nx; j0 += kBlock)
      for (int64_t j = j0; j < std::min(j0 + kBlock, nx); ++j)
        for (int64_t i = i0; i < std::min(i0 + kBlock, ny); ++i) cols[(j + kPad) * ny + i] = img[i * nx + j];
  std::fill(cols + (nx + kPad) * ny, cols + (nx + 2 * kPad) * ny, T(0));
}

template <typename T>
T march_sum(bool simd, const T* buf, int64_t stride, int64_t n_minor, int64_t n_major, T alpha, T beta) {
  return simd ? avx2::march_sum<simd::Avx2<T>, T>(buf, stride, n_minor, n_major, alpha, beta)
              : portable::march_sum<simd::Scalar<T>, T>(buf, stride, n_minor, n_major, alpha, beta);
}

template <typename T>
void forward_impl(const T* img, const T* rays, T* out, int64_t batch, int64_t n_views, int64_t n_det, int64_t ny,
                  int64_t nx) {
  const int64_t rows_size = (ny + 2 * kPad) * nx, cols_size = (nx + 2 * kPad) * ny;
  // The SIMD loop addresses the buffers with int32 offsets.
  const bool simd = simd::use_avx2() && rows_size < std::numeric_limits<int32_t>::max();
  std::vector<T> padded(batch * (rows_size + cols_size));
  at::parallel_for(0, batch, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      T* rows = padded.data() + b * (rows_size + cols_size);
      pad_image(img + b * ny * nx, ny, nx, rows, rows + rows_size);
    }
  });
  parallel_items(batch * n_views, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / n_views, v = t % n_views;
      const T* rows = padded.data() + b * (rows_size + cols_size);
      const T* cols = rows + rows_size;
      const T* ray = rays + v * n_det * RAY_FIELDS;
      T* o = out + t * n_det;
      for (int64_t c = 0; c < n_det; ++c, ray += RAY_FIELDS) {
        const bool x_major = ray[3] != T(0);
        const T sum = x_major ? march_sum(simd, rows, nx, ny, nx, ray[0], ray[1])
                              : march_sum(simd, cols, ny, nx, ny, ray[0], ray[1]);
        o[c] = ray[2] * sum;
      }
    }
  });
}

// Forward of one image for 8 neighbouring rays of one view at once, float with
// AVX2 (the single-image path): lane l sums the samples of ray l at the major
// indices [first, last] (the union of the rays' clipped ranges), reading
// `lines`: line m holds the minor axis at major index m, padded with kPad zeros
// on both sides (line_len values per line, 16 more after the last line).  At
// each m the 8 rays' taps lie close together in line m (neighbouring rays are
// about one pixel apart), so they come from two 8-value loads of the line and
// in-register permutes instead of gathers; a gather takes the rare m at which
// they span more than 16 values.  Positions are those of march_sum
// (alpha + kPad + beta m), clamped to [kPad - 1.5, n_minor + kPad + 0.5]: a lane
// outside its own ray's range then reads only padding (zero), so it adds exactly
// zero, and in-range samples are unchanged.  Each lane accumulates its samples
// in order of m, as march_sum_lanes does.
__attribute__((target("avx2,fma"))) void march_sum_8_rays(const float* lines, int64_t line_len, int64_t n_minor,
                                                          const float* alpha, const float* beta, int64_t first,
                                                          int64_t last, float* sums) {
  const __m256 shifted = _mm256_add_ps(_mm256_loadu_ps(alpha), _mm256_set1_ps(float(kPad)));
  const __m256 slope = _mm256_loadu_ps(beta);
  const __m256 lowest = _mm256_set1_ps(float(kPad) - 1.5f), highest = _mm256_set1_ps(float(n_minor + kPad) + 0.5f);
  const __m256i lane0 = _mm256_setzero_si256(), lane7 = _mm256_set1_epi32(7);
  const __m256i zero = _mm256_setzero_si256(), one = _mm256_set1_epi32(1), fourteen = _mm256_set1_epi32(14);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t m = first; m <= last; ++m) {
    const float* line = lines + m * line_len;
    __m256 pos = _mm256_fmadd_ps(slope, _mm256_set1_ps(float(m)), shifted);
    pos = _mm256_min_ps(_mm256_max_ps(pos, lowest), highest);
    const __m256i k = _mm256_cvttps_epi32(pos);  // pos >= 0.5: truncation is floor
    const __m256 f = _mm256_sub_ps(pos, _mm256_cvtepi32_ps(k));
    // The window starts at the lower of the outer lanes' taps (the rays are ordered across the line).
    const __m256i base = _mm256_min_epi32(_mm256_permutevar8x32_epi32(k, lane0), _mm256_permutevar8x32_epi32(k, lane7));
    const __m256i rel = _mm256_sub_epi32(k, base);
    const __m256i outside = _mm256_or_si256(_mm256_cmpgt_epi32(rel, fourteen), _mm256_cmpgt_epi32(zero, rel));
    __m256 lo, hi;
    if (_mm256_testz_si256(outside, outside)) {
      const float* window = line + _mm256_cvtsi256_si32(base);
      const __m256 w0 = _mm256_loadu_ps(window), w1 = _mm256_loadu_ps(window + 8);
      const __m256i rel1 = _mm256_add_epi32(rel, one);
      // permutevar8x32 reads the index's low 3 bits; bit 3 (moved to the sign) picks w1 over w0.
      lo = _mm256_blendv_ps(_mm256_permutevar8x32_ps(w0, rel), _mm256_permutevar8x32_ps(w1, rel),
                            _mm256_castsi256_ps(_mm256_slli_epi32(rel, 28)));
      hi = _mm256_blendv_ps(_mm256_permutevar8x32_ps(w0, rel1), _mm256_permutevar8x32_ps(w1, rel1),
                            _mm256_castsi256_ps(_mm256_slli_epi32(rel1, 28)));
    } else {
      lo = _mm256_i32gather_ps(line, k, 4);
      hi = _mm256_i32gather_ps(line + 1, k, 4);
    }
    acc = _mm256_fmadd_ps(f, _mm256_sub_ps(hi, lo), _mm256_add_ps(acc, lo));
  }
  _mm256_storeu_ps(sums, acc);
}

// Forward of one float image on CPUs with AVX2: rays of a view by groups of 8
// neighbours of one kind (x- or y-major), march_sum_8_rays.  A group's lanes
// without a ray of that kind (the detector's last group, a fan's views whose
// rays change kind) repeat one of its rays, and their sums are dropped.
void forward_ray_groups(const float* img, const float* rays, float* out, int64_t n_views, int64_t n_det, int64_t ny,
                        int64_t nx) {
  constexpr int64_t kSlack = 16;  // the 16-value window may read past the last line
  const int64_t len_x = ny + 2 * kPad, len_y = nx + 2 * kPad;
  // x-major rays read the columns (line j: image column j), y-major rays the rows.
  std::vector<float> columns(nx * len_x + kSlack, 0.0f), rows(ny * len_y + kSlack, 0.0f);
  // Serial: a pass over the image is small beside the projection, and each
  // parallel region costs a wait for every thread (long on a loaded machine).
  for (int64_t i = 0; i < ny; ++i) std::copy(img + i * nx, img + (i + 1) * nx, rows.data() + i * len_y + kPad);
  constexpr int64_t kTile = 32;  // tiles keep the transposed writes in cache
  for (int64_t j0 = 0; j0 < nx; j0 += kTile)
    for (int64_t i0 = 0; i0 < ny; i0 += kTile)
      for (int64_t j = j0; j < std::min(j0 + kTile, nx); ++j)
        for (int64_t i = i0; i < std::min(i0 + kTile, ny); ++i) columns[j * len_x + kPad + i] = img[i * nx + j];
  parallel_items(n_views, [&](int64_t v0, int64_t v1) {
    alignas(32) float alpha[8], beta[8], sums[8];
    int64_t ray_of_lane[8];
    for (int64_t v = v0; v < v1; ++v) {
      const float* view_rays = rays + v * n_det * RAY_FIELDS;
      for (int64_t c0 = 0; c0 < n_det; c0 += 8) {
        const int64_t n = std::min<int64_t>(8, n_det - c0);
        for (const bool x_major : {true, false}) {
          const int64_t n_minor = x_major ? ny : nx, n_major = x_major ? nx : ny;
          int64_t lanes = 0, first = std::numeric_limits<int64_t>::max(), last = -1;
          for (int64_t c = c0; c < c0 + n; ++c) {
            const float* ray = view_rays + c * RAY_FIELDS;
            if ((ray[3] != 0.0f) != x_major) continue;
            int64_t lo, hi;
            clip_march<float>(ray[0], ray[1], -1.5f, float(n_minor) + 0.5f, n_major, &lo, &hi);
            if (lo <= hi) {
              first = std::min(first, lo);
              last = std::max(last, hi);
            }
            alpha[lanes] = ray[0];
            beta[lanes] = ray[1];
            ray_of_lane[lanes++] = c;
          }
          if (lanes == 0) continue;
          for (int64_t l = lanes; l < 8; ++l) {
            alpha[l] = alpha[0];
            beta[l] = beta[0];
          }
          std::fill(sums, sums + 8, 0.0f);
          if (first <= last)
            march_sum_8_rays(x_major ? columns.data() : rows.data(), x_major ? len_x : len_y, n_minor, alpha, beta,
                             first, last, sums);
          for (int64_t l = 0; l < lanes; ++l)
            out[v * n_det + ray_of_lane[l]] = view_rays[ray_of_lane[l] * RAY_FIELDS + 2] * sums[l];
        }
      }
    }
  });
}

// Number of images processed together by the image-lane kernels.
template <typename T>
int64_t image_lanes(bool simd) {
  return simd ? simd::Avx2<T>::width : 1;
}

// Interleaves images [b0, b0 + lanes) (missing ones as zeros) into zero-padded
// buffers: rows ((ny + 2 kPad) x nx x lanes) and cols ((nx + 2 kPad) x ny x lanes).
template <typename T>
void interleave_padded(const T* img, int64_t batch, int64_t b0, int64_t lanes, int64_t ny, int64_t nx, T* rows,
                       T* cols) {
  std::fill(rows, rows + (ny + 2 * kPad) * nx * lanes, T(0));
  std::fill(cols, cols + (nx + 2 * kPad) * ny * lanes, T(0));
  constexpr int64_t kTile = 32;  // tiles keep the transposed writes in cache
  for (int64_t l = 0; l < lanes && b0 + l < batch; ++l) {
    const T* src = img + (b0 + l) * ny * nx;
    for (int64_t i0 = 0; i0 < ny; i0 += kTile)
      for (int64_t j0 = 0; j0 < nx; j0 += kTile)
        for (int64_t i = i0; i < std::min(i0 + kTile, ny); ++i)
          for (int64_t j = j0; j < std::min(j0 + kTile, nx); ++j) {
            const T value = src[i * nx + j];
            rows[((i + kPad) * nx + j) * lanes + l] = value;
            cols[((j + kPad) * ny + i) * lanes + l] = value;
          }
  }
}

// Forward for batches, on CPUs with AVX2: groups of `lanes` images share every
// ray's arithmetic.
template <typename T>
void forward_lanes_impl(const T* img, const T* rays, T* out, int64_t batch, int64_t n_views, int64_t n_det,
                        int64_t ny, int64_t nx) {
  const int64_t lanes = image_lanes<T>(true);
  const int64_t groups = (batch + lanes - 1) / lanes;
  const int64_t rows_size = (ny + 2 * kPad) * nx * lanes, cols_size = (nx + 2 * kPad) * ny * lanes;
  std::vector<T> padded(groups * (rows_size + cols_size));
  at::parallel_for(0, groups, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      T* rows = padded.data() + g * (rows_size + cols_size);
      interleave_padded(img, batch, g * lanes, lanes, ny, nx, rows, rows + rows_size);
    }
  });
  parallel_items(groups * n_views, [&](int64_t t0, int64_t t1) {
    std::vector<T> lane_out(n_det * lanes);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t g = t / n_views, v = t % n_views;
      const T* rows = padded.data() + g * (rows_size + cols_size);
      const T* cols = rows + rows_size;
      const T* ray = rays + v * n_det * RAY_FIELDS;
      for (int64_t c = 0; c < n_det; ++c, ray += RAY_FIELDS) {
        const bool x_major = ray[3] != T(0);
        avx2::march_sum_lanes<simd::Avx2<T>, T>(x_major ? rows : cols, x_major ? nx : ny, x_major ? ny : nx,
                                                x_major ? nx : ny, ray[0], ray[1], ray[2], lane_out.data() + c * lanes);
      }
      for (int64_t l = 0; l < lanes && g * lanes + l < batch; ++l) {
        T* o = out + ((g * lanes + l) * n_views + v) * n_det;
        for (int64_t c = 0; c < n_det; ++c) o[c] = lane_out[c * lanes + l];
      }
    }
  });
}


// Adjoint of one image, ray-driven but by output lines: the transpose of
// forward_impl, sample for sample (the positions and clipped ranges of
// march_sum).  x-major rays add their taps to the columns of the image, y-major
// rays to its rows: each pass takes groups of kLinesPerItem lines and adds to
// them, view by view and ray group by ray group (splat_ray_group), the samples
// that every ray of its kind takes on them.  Each output value is summed by one
// item in a fixed order (views, then rays), so the result is the same to the
// bit for any number of threads, with no private copies of the image.  The
// rays' numbers are laid out once per pass, by groups of V::width (missing
// rays never sample a line).
// Whether some view of a ray table has both x-major and y-major rays (a fan
// beam whose rays cross a diagonal direction).
template <typename T>
bool mixes_ray_kinds(const T* rays, int64_t n_views, int64_t n_det) {
  for (int64_t v = 0; v < n_views; ++v)
    for (int64_t c = 1; c < n_det; ++c)
      if ((rays[(v * n_det + c) * RAY_FIELDS + 3] != T(0)) != (rays[v * n_det * RAY_FIELDS + 3] != T(0))) return true;
  return false;
}

template <typename T>
using SplatRayGroup = void (*)(T*, int64_t, int64_t, int64_t, const T*, const T*, const T*, const int32_t*,
                               const int32_t*);

template <class V, typename T>
void adjoint_lines_impl(SplatRayGroup<T> splat_ray_group, const T* sino, const T* rays, T* out, int64_t n_views,
                        int64_t n_det, int64_t ny, int64_t nx, T* columns) {
  constexpr int64_t W = V::width;
  const int64_t n_det_padded = (n_det + W - 1) / W * W;
  const int64_t table_size = n_views * n_det_padded;
  // Per pass (0: y-major rays, by rows; 1: x-major rays, by columns) and view, the rays' numbers.
  std::vector<T> shifted(2 * table_size), slope(2 * table_size), value(2 * table_size);
  std::vector<int32_t> first(2 * table_size), last(2 * table_size);
  std::vector<char> view_has_rays(2 * n_views);
  at::parallel_for(0, n_views, 1, [&](int64_t v0, int64_t v1) {
    for (int64_t v = v0; v < v1; ++v) {
      for (int pass = 0; pass < 2; ++pass) {
        const bool x_major = pass == 1;
        const int64_t n_major = x_major ? nx : ny, n_minor = x_major ? ny : nx;
        view_has_rays[pass * n_views + v] = 0;
        for (int64_t c = 0; c < n_det_padded; ++c) {
          const int64_t q = pass * table_size + v * n_det_padded + c;
          const T* ray = rays + (v * n_det + c) * RAY_FIELDS;
          int64_t lo = 0, hi = -1;
          if (c < n_det && (ray[3] != T(0)) == x_major)
            clip_march<T>(ray[0], ray[1], T(-1.5), T(n_minor) + T(0.5), n_major, &lo, &hi);
          const bool samples = lo <= hi;
          shifted[q] = samples ? ray[0] + T(kPad) : T(0);
          slope[q] = samples ? ray[1] : T(0);
          value[q] = samples ? ray[2] * sino[v * n_det + c] : T(0);
          first[q] = samples ? int32_t(lo) : 1;
          last[q] = samples ? int32_t(hi) : 0;
          view_has_rays[pass * n_views + v] |= samples;
        }
      }
    }
  });
  // Items: blocks of kLinesPerItem rows (y-major rays), then of columns (x-major rays).
  const int64_t row_items = (ny + kLinesPerItem - 1) / kLinesPerItem;
  const int64_t items = row_items + (nx + kLinesPerItem - 1) / kLinesPerItem;
  parallel_items(items, [&](int64_t t0, int64_t t1) {
    std::vector<T> lines(kLinesPerItem * (std::max(nx, ny) + 2 * kPad));
    for (int64_t t = t0; t < t1; ++t) {
      const int pass = t < row_items ? 0 : 1;
      const int64_t n_major = pass ? nx : ny, n_minor = pass ? ny : nx, line_len = n_minor + 2 * kPad;
      T* dest = pass ? columns : out;  // columns: the image transposed, (nx, ny)
      const int64_t m0 = (pass ? t - row_items : t) * kLinesPerItem, count = std::min(kLinesPerItem, n_major - m0);
      std::fill(lines.begin(), lines.end(), T(0));
      for (int64_t v = 0; v < n_views; ++v) {
        if (!view_has_rays[pass * n_views + v]) continue;
        for (int64_t c = 0; c < n_det_padded; c += W) {
          const int64_t q = pass * table_size + v * n_det_padded + c;
          splat_ray_group(lines.data(), line_len, m0, count, shifted.data() + q, slope.data() + q, value.data() + q,
                          first.data() + q, last.data() + q);
        }
      }
      for (int64_t l = 0; l < count; ++l)
        std::copy(lines.data() + l * line_len + kPad, lines.data() + l * line_len + kPad + n_minor,
                  dest + (m0 + l) * n_minor);
    }
  });
  // out[i, j] = (rows' sum) + columns[j, i], by tiles so that the transposed reads stay in cache.
  // Serial: a pass over the image is small beside the adjoint, and each parallel region
  // costs a wait for every thread (long on a loaded machine).
  constexpr int64_t kTile = 32;
  for (int64_t i0 = 0; i0 < ny; i0 += kTile)
    for (int64_t j = 0; j < nx; ++j)
      for (int64_t i = i0; i < std::min(i0 + kTile, ny); ++i) out[i * nx + j] += columns[j * ny + i];
}

// Adjoint, ray-driven: the literal transpose of forward_lanes_impl.  Views
// are split into a fixed number of chunks per group of images (independent of
// the thread count); each chunk scatters into private buffers, which are then
// summed in chunk order, so results are bitwise reproducible.
template <typename T>
void adjoint_scatter_impl(const T* sino, const T* rays, T* out, int64_t batch, int64_t n_views, int64_t n_det,
                          int64_t ny, int64_t nx) {
  const bool simd = simd::use_avx2();
  const int64_t lanes = batch > 1 ? image_lanes<T>(simd) : 1;
  const int64_t groups = (batch + lanes - 1) / lanes;
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(n_views, (kAdjointTasks + groups - 1) / groups));
  const int64_t views_per_chunk = (n_views + chunks - 1) / chunks;
  const int64_t rows_size = (ny + 2 * kPad) * nx * lanes, cols_size = (nx + 2 * kPad) * ny * lanes;
  const bool offsets_fit_int32 = std::max(rows_size, cols_size) < std::numeric_limits<int32_t>::max();
  std::vector<T> partial(groups * chunks * (rows_size + cols_size), T(0));
  parallel_items(groups * chunks, [&](int64_t t0, int64_t t1) {
    std::vector<T> value(n_det * lanes);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t g = t / chunks, k = t % chunks;
      T* rows = partial.data() + t * (rows_size + cols_size);
      T* cols = rows + rows_size;
      const int64_t v1 = std::min(n_views, (k + 1) * views_per_chunk);
      for (int64_t v = k * views_per_chunk; v < v1; ++v) {
        std::fill(value.begin(), value.end(), T(0));
        for (int64_t l = 0; l < lanes && g * lanes + l < batch; ++l) {
          const T* s = sino + ((g * lanes + l) * n_views + v) * n_det;
          for (int64_t c = 0; c < n_det; ++c) value[c * lanes + l] = s[c];
        }
        const T* ray = rays + v * n_det * RAY_FIELDS;
        for (int64_t c = 0; c < n_det; ++c, ray += RAY_FIELDS) {
          const bool x_major = ray[3] != T(0);
          T* buf = x_major ? rows : cols;
          const int64_t stride = x_major ? nx : ny, n_minor = x_major ? ny : nx;
          const T* val = value.data() + c * lanes;
          if (simd && lanes > 1)
            avx2::march_scatter_lanes<simd::Avx2<T>, T>(buf, stride, n_minor, stride, ray[0], ray[1], ray[2], val);
          else if (simd && offsets_fit_int32)
            avx2::march_scatter_single<simd::Avx2<T>, T>(buf, stride, n_minor, stride, ray[0], ray[1], ray[2], *val);
          else
            portable::march_scatter_lanes<simd::Scalar<T>, T>(buf, stride, n_minor, stride, ray[0], ray[1], ray[2],
                                                              val);
        }
      }
    }
  });
  // out[b, i, j] = sum over chunks of rows[i + pad, j, lane] + cols[j + pad, i, lane],
  // by tiles of rows so that the transposed reads stay in cache.
  constexpr int64_t kTile = 32;
  const int64_t row_tiles = (ny + kTile - 1) / kTile;
  at::parallel_for(0, batch * row_tiles, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / row_tiles, i0 = (t % row_tiles) * kTile, i1 = std::min(i0 + kTile, ny);
      const int64_t g = b / lanes, l = b % lanes;
      T* o = out + b * ny * nx;
      for (int64_t i = i0; i < i1; ++i) std::fill(o + i * nx, o + (i + 1) * nx, T(0));
      for (int64_t k = 0; k < chunks; ++k) {
        const T* rows = partial.data() + (g * chunks + k) * (rows_size + cols_size);
        const T* cols = rows + rows_size;
        for (int64_t i = i0; i < i1; ++i) {
          const T* r = rows + (i + kPad) * nx * lanes + l;
          for (int64_t j = 0; j < nx; ++j) o[i * nx + j] += r[j * lanes];
        }
        for (int64_t j = 0; j < nx; ++j) {
          const T* c = cols + (j + kPad) * ny * lanes + l;
          for (int64_t i = i0; i < i1; ++i) o[i * nx + j] += c[i * lanes];
        }
      }
    }
  });
}

template <typename T>
void adjoint_gather_impl(const T* sino, const T* rays, const T* views, T* out, int64_t batch, int64_t n_views,
                         int64_t n_det, int64_t ny, int64_t nx) {
  at::parallel_for(0, batch * ny, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / ny, i = t % ny;
      for (int64_t j = 0; j < nx; ++j) {
        T acc = T(0);
        for (int64_t v = 0; v < n_views; ++v)
          acc += gather_view(rays + v * n_det * RAY_FIELDS, views + v * VIEW_FIELDS,
                             sino + (b * n_views + v) * n_det, n_det, i, j);
        out[t * nx + j] = acc;
      }
    }
  });
}

}  // namespace

at::Tensor joseph2d_forward_cpu(const at::Tensor& image, const at::Tensor& rays, const at::Tensor& views) {
  check_joseph2d_forward_inputs(image, rays, views);
  const int64_t batch = image.size(0), ny = image.size(1), nx = image.size(2), n_views = rays.size(0),
                n_det = rays.size(1);
  auto img = image.contiguous();
  auto ray_table = rays.contiguous();
  auto out = at::empty({batch, n_views, n_det}, image.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(image.scalar_type(), "joseph2d_forward_cpu", [&] {
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (batch == 1 && simd::use_avx2()) {
        forward_ray_groups(img.data_ptr<float>(), ray_table.data_ptr<float>(), out.data_ptr<float>(), n_views, n_det,
                           ny, nx);
        return;
      }
    }
    // Image lanes pay off only with SIMD; the portable build takes one image at a time.
    auto impl = batch > 1 && simd::use_avx2() ? forward_lanes_impl<scalar_t> : forward_impl<scalar_t>;
    impl(img.data_ptr<scalar_t>(), ray_table.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), batch, n_views, n_det,
         ny, nx);
  });
  return out;
}

at::Tensor joseph2d_adjoint_cpu(const at::Tensor& sino, const at::Tensor& rays, const at::Tensor& views, int64_t ny,
                                int64_t nx) {
  check_joseph2d_adjoint_inputs(sino, rays, views, ny, nx);
  const int64_t batch = sino.size(0), n_views = sino.size(1), n_det = sino.size(2);
  auto s = sino.contiguous();
  auto ray_table = rays.contiguous();
  auto out = at::empty({batch, ny, nx}, sino.options());  // every element is written below
  if (out.numel() == 0 || n_views == 0) return out.zero_();
  AT_DISPATCH_FLOATING_TYPES(sino.scalar_type(), "joseph2d_adjoint_cpu", [&] {
    const scalar_t* sino_data = s.data_ptr<scalar_t>();
    const scalar_t* ray_data = ray_table.data_ptr<scalar_t>();
    scalar_t* out_data = out.data_ptr<scalar_t>();
    if (batch > 1 || mixes_ray_kinds(ray_data, n_views, n_det)) {
      adjoint_scatter_impl<scalar_t>(sino_data, ray_data, out_data, batch, n_views, n_det, ny, nx);
      return;
    }
    std::vector<scalar_t> columns(ny * nx);
    if (simd::use_avx2())
      adjoint_lines_impl<simd::Avx2<scalar_t>, scalar_t>(avx2::splat_ray_group<simd::Avx2<scalar_t>, scalar_t>,
                                                         sino_data, ray_data, out_data, n_views, n_det, ny, nx,
                                                         columns.data());
    else
      adjoint_lines_impl<simd::Scalar<scalar_t>, scalar_t>(portable::splat_ray_group<simd::Scalar<scalar_t>, scalar_t>,
                                                           sino_data, ray_data, out_data, n_views, n_det, ny, nx,
                                                           columns.data());
  });
  return out;
}

at::Tensor joseph2d_adjoint_gather_cpu(const at::Tensor& sino, const at::Tensor& rays, const at::Tensor& views,
                                       int64_t ny, int64_t nx) {
  check_joseph2d_adjoint_inputs(sino, rays, views, ny, nx);
  TORCH_CHECK(sino.device().is_cpu(), "joseph2d_adjoint_gather_cpu: expected CPU tensors");
  check_joseph2d_view_values(views, ny, nx, "joseph2d_adjoint_gather");
  const int64_t batch = sino.size(0), n_views = sino.size(1), n_det = sino.size(2);
  auto s = sino.contiguous();
  auto ray_table = rays.contiguous();
  auto view_table = views.contiguous();
  auto out = at::zeros({batch, ny, nx}, sino.options());
  if (out.numel() == 0 || n_views == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(sino.scalar_type(), "joseph2d_adjoint_gather_cpu", [&] {
    adjoint_gather_impl<scalar_t>(s.data_ptr<scalar_t>(), ray_table.data_ptr<scalar_t>(),
                                  view_table.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), batch, n_views, n_det, ny,
                                  nx);
  });
  return out;
}

namespace {

// Index of the first value of p[0, n) that is NaN or infinite; -1 when none.
int64_t first_non_finite(const double* p, int64_t n) {
  for (int64_t q = 0; q < n; ++q)
    if (!std::isfinite(p[q])) return q;
  return -1;
}

void check_finite_vectors(const at::Tensor& vectors, const char* op) {
  auto vec = vectors.contiguous();
  const int64_t bad = first_non_finite(vec.data_ptr<double>(), vec.numel());
  TORCH_CHECK(bad < 0, op, ": the vectors must be finite, got a non-finite value in view ", bad / vec.size(1));
}

const char* march_problem(int status, bool is_float) {
  if (status == kMarchNonFinite) return "it holds NaN or infinite values";
  return is_float ? "its numbers are too large to compute its samples on this image in float32"
                  : "its numbers are too large to compute its samples on this image in float64";
}

// Every ray of a CPU ray table must be one that the kernels can march on an
// ny x nx image (ray_line_status); otherwise the kernels would skip it (or
// give NaN), so it is an error.  A quick test per ray, in parallel over the
// views: a small fraction of a projection's time.  CUDA tables are not read
// (that would synchronise the device); the kernels skip such rays there.
void check_ray_values(const at::Tensor& rays, int64_t ny, int64_t nx) {
  if (!rays.device().is_cpu() || rays.numel() == 0) return;
  auto table = rays.contiguous();
  const int64_t n_views = table.size(0), n_det = table.size(1);
  AT_DISPATCH_FLOATING_TYPES(table.scalar_type(), "joseph2d_check_rays", [&] {
    const scalar_t* r = table.data_ptr<scalar_t>();
    std::atomic<int64_t> first_bad{std::numeric_limits<int64_t>::max()};
    at::parallel_for(0, n_views, 16, [&](int64_t v0, int64_t v1) {
      for (int64_t q = v0 * n_det; q < v1 * n_det; ++q) {
        if (ray_line_status(r + q * RAY_FIELDS, ny, nx) == kMarchOk) continue;
        int64_t seen = first_bad.load();
        while (q < seen && !first_bad.compare_exchange_weak(seen, q)) {
        }
        return;
      }
    });
    const int64_t bad = first_bad.load();
    if (bad == std::numeric_limits<int64_t>::max()) return;
    TORCH_CHECK(false, "joseph2d: ray ", bad % n_det, " of view ", bad / n_det, " of the ray table cannot be used: ",
                march_problem(ray_line_status(r + bad * RAY_FIELDS, ny, nx), std::is_same_v<scalar_t, float>),
                " (ray tables come from joseph2d_tables, as known_ops.RayTransform builds them)");
  });
}

}  // namespace

// The view table of a CPU op that reads it (gather, voxel-driven pair): see view_map_problem.
void check_joseph2d_view_values(const at::Tensor& views, int64_t ny, int64_t nx, const char* op) {
  if (!views.device().is_cpu()) return;
  auto table = views.contiguous();
  AT_DISPATCH_FLOATING_TYPES(table.scalar_type(), "joseph2d_check_views", [&] {
    const scalar_t* w = table.data_ptr<scalar_t>();
    for (int64_t v = 0; v < table.size(0); ++v) {
      const char* problem = view_map_problem(w + v * VIEW_FIELDS, ny, nx);
      TORCH_CHECK(problem == nullptr, op, ": view ", v, " of the view table cannot be used: ", problem,
                  " (view tables come from joseph2d_tables, as known_ops.RayTransform builds them)");
    }
  });
}

std::tuple<at::Tensor, at::Tensor> joseph2d_tables(const at::Tensor& vectors, int64_t kind, int64_t n_det,
                                                   int64_t ny, int64_t nx, at::ArrayRef<double> spacing_offset) {
  TORCH_CHECK(vectors.dim() == 2 && vectors.size(1) == 6, "joseph2d_tables: vectors must have shape (n_views, 6)");
  TORCH_CHECK(vectors.scalar_type() == at::kDouble && vectors.device().is_cpu(),
              "joseph2d_tables: vectors must be a float64 CPU tensor");
  TORCH_CHECK(kind >= kParallel && kind <= kFanCurved, "joseph2d_tables: unknown geometry kind ", kind);
  TORCH_CHECK(n_det >= 1 && ny >= 1 && nx >= 1, "joseph2d_tables: sizes must be positive");
  TORCH_CHECK(spacing_offset.size() == 4, "joseph2d_tables: expected [sy, sx, oy, ox]");
  TORCH_CHECK(std::isfinite(spacing_offset[0]) && std::isfinite(spacing_offset[1]) && spacing_offset[0] > 0 &&
                  spacing_offset[1] > 0,
              "joseph2d_tables: the pixel spacing [sy, sx] must be positive and finite, got [", spacing_offset[0], ", ",
              spacing_offset[1], "]");
  TORCH_CHECK(std::isfinite(spacing_offset[2]) && std::isfinite(spacing_offset[3]),
              "joseph2d_tables: the image offset [oy, ox] must be finite");
  check_finite_vectors(vectors, "joseph2d_tables");
  const Grid2D grid{ny, nx, spacing_offset[0], spacing_offset[1], spacing_offset[2], spacing_offset[3]};
  auto vec = vectors.contiguous();
  const int64_t n_views = vec.size(0);
  auto rays = at::empty({n_views, n_det, RAY_FIELDS}, vec.options());
  auto views = at::empty({n_views, VIEW_FIELDS}, vec.options());
  const double* v = vec.data_ptr<double>();
  double* r = rays.data_ptr<double>();
  double* w = views.data_ptr<double>();
  at::parallel_for(0, n_views, 1, [&](int64_t v0, int64_t v1) {
    for (int64_t k = v0; k < v1; ++k) {
      for (int64_t c = 0; c < n_det; ++c) make_ray_line(kind, v + 6 * k, n_det, c, grid, r + (k * n_det + c) * RAY_FIELDS);
      make_view_map(kind, v + 6 * k, n_det, grid, w + k * VIEW_FIELDS);
    }
  });
  // Vectors whose lengths are extreme beside the pixel spacing overflow here
  // (known_ops bounds the geometry's lengths, so that its tables never do).
  const int64_t bad_ray = first_non_finite(r, n_views * n_det * RAY_FIELDS);
  const int64_t bad_view = first_non_finite(w, n_views * VIEW_FIELDS);
  TORCH_CHECK(bad_ray < 0 && bad_view < 0, "joseph2d_tables: the tables of view ",
              bad_ray >= 0 ? bad_ray / (n_det * RAY_FIELDS) : bad_view / VIEW_FIELDS,
              " overflow float64 (the geometry's lengths are too large, or the pixel spacing too small, for the "
              "other)");
  return {rays, views};
}

namespace {

void check_tables(const at::Tensor& data, const at::Tensor& rays, const at::Tensor& views, const char* name) {
  TORCH_CHECK(data.scalar_type() == at::kFloat || data.scalar_type() == at::kDouble, "joseph2d: ", name,
              " must be float32 or float64, got ", data.scalar_type());
  TORCH_CHECK(rays.dim() == 3 && rays.size(2) == RAY_FIELDS, "joseph2d: ray table must have shape (n_views, n_det, ",
              RAY_FIELDS, "), got ", rays.sizes());
  TORCH_CHECK(views.dim() == 2 && views.size(0) == rays.size(0) && views.size(1) == VIEW_FIELDS,
              "joseph2d: view table must have shape (n_views, ", VIEW_FIELDS, "), got ", views.sizes());
  TORCH_CHECK(rays.scalar_type() == data.scalar_type() && views.scalar_type() == data.scalar_type(), "joseph2d: ",
              name, " and geometry tables must have the same dtype");
  TORCH_CHECK(rays.device() == data.device() && views.device() == data.device(), "joseph2d: ", name,
              " and geometry tables must be on the same device");
}
}  // namespace

at::Tensor geometry2d_rays(const at::Tensor& vectors, int64_t kind, int64_t n_det) {
  TORCH_CHECK(vectors.dim() == 2 && vectors.size(1) == 6, "geometry2d_rays: vectors must have shape (n_views, 6)");
  TORCH_CHECK(vectors.scalar_type() == at::kDouble && vectors.device().is_cpu(),
              "geometry2d_rays: vectors must be a float64 CPU tensor");
  TORCH_CHECK(kind >= kParallel && kind <= kFanCurved, "geometry2d_rays: unknown geometry kind ", kind);
  TORCH_CHECK(n_det >= 1, "geometry2d_rays: n_det must be positive");
  check_finite_vectors(vectors, "geometry2d_rays");
  auto vec = vectors.contiguous();
  const int64_t n_views = vec.size(0);
  auto out = at::empty({n_views, n_det, 4}, vec.options());
  const double* v = vec.data_ptr<double>();
  double* o = out.data_ptr<double>();
  for (int64_t k = 0; k < n_views; ++k)
    for (int64_t c = 0; c < n_det; ++c) {
      Vec2 origin, dir;
      ray_of_bin(kind, v + 6 * k, n_det, c, &origin, &dir);
      double* r = o + (k * n_det + c) * 4;
      r[0] = origin.x;
      r[1] = origin.y;
      r[2] = dir.x;
      r[3] = dir.y;
    }
  return out;
}

void check_joseph2d_forward_inputs(const at::Tensor& image, const at::Tensor& rays, const at::Tensor& views) {
  TORCH_CHECK(image.dim() == 3, "joseph2d: image must have shape (batch, ny, nx), got ", image.sizes());
  check_tables(image, rays, views, "image");
  check_ray_values(rays, image.size(1), image.size(2));
}

void check_joseph2d_adjoint_inputs(const at::Tensor& sino, const at::Tensor& rays, const at::Tensor& views, int64_t ny,
                                   int64_t nx) {
  TORCH_CHECK(sino.dim() == 3, "joseph2d: sinogram must have shape (batch, n_views, n_det), got ", sino.sizes());
  check_tables(sino, rays, views, "sinogram");
  TORCH_CHECK(rays.size(0) == sino.size(1) && rays.size(1) == sino.size(2), "joseph2d: sinogram shape ",
              sino.sizes(), " does not match the ray table ", rays.sizes());
  TORCH_CHECK(ny >= 1 && nx >= 1, "joseph2d: image size must be positive");
  check_ray_values(rays, ny, nx);
}

}  // namespace known_ops
