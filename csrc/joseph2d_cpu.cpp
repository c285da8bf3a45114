// CPU loops of the 2D Joseph projector pair.  The definitions come from
// joseph2d.h; the inner loops (joseph2d_cpu_kernels.inc) are written once and
// compiled twice, portable and AVX2, and the AVX2 build is used when the
// processor has it (set KNOWN_OPS_SIMD=0 to force the portable loops).
//
// Forward: ray-driven.  The image is copied once into two zero-padded
// buffers, one as is (for x-major rays, which step along columns and read two
// neighbouring rows) and one transposed (for y-major rays), so both kinds of
// ray read memory the same way and the inner loop needs no bounds checks.
//
// Adjoint: the exact transpose of the forward, computed pixel by pixel (no
// scatter, no atomics, a fixed summation order: bitwise reproducible whatever
// the number of threads).  x-major rays are gathered column by column into a
// transposed buffer, y-major rays row by row, and the two are added.
#include "joseph2d_cpu.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "joseph2d.h"
#include "simd.h"

namespace known_ops {
namespace {

constexpr int64_t kPad = 2;  // zero rows on each side of the interpolated axis

namespace portable {
#define KO_TARGET inline
#include "joseph2d_cpu_kernels.inc"
#undef KO_TARGET
}  // namespace portable

namespace avx2 {
#define KO_TARGET __attribute__((target("avx2,fma")))
#include "joseph2d_cpu_kernels.inc"
#undef KO_TARGET
}  // namespace avx2

bool use_avx2() {
  static const bool enabled = [] {
    const char* env = std::getenv("KNOWN_OPS_SIMD");
    return simd::cpu_has_avx2() && !(env != nullptr && std::strcmp(env, "0") == 0);
  }();
  return enabled;
}

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
  const bool simd = use_avx2() && rows_size < std::numeric_limits<int32_t>::max();
  std::vector<T> padded(batch * (rows_size + cols_size));
  at::parallel_for(0, batch, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      T* rows = padded.data() + b * (rows_size + cols_size);
      pad_image(img + b * ny * nx, ny, nx, rows, rows + rows_size);
    }
  });
  at::parallel_for(0, batch * n_views, 1, [&](int64_t t0, int64_t t1) {
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
  for (int64_t l = 0; l < lanes && b0 + l < batch; ++l) {
    const T* src = img + (b0 + l) * ny * nx;
    for (int64_t i = 0; i < ny; ++i)
      for (int64_t j = 0; j < nx; ++j) {
        const T value = src[i * nx + j];
        rows[((i + kPad) * nx + j) * lanes + l] = value;
        cols[((j + kPad) * ny + i) * lanes + l] = value;
      }
  }
}

template <typename T>
void march_sum_lanes(bool simd, const T* buf, int64_t stride, int64_t n_minor, int64_t n_major, const T* ray, T* out) {
  if (simd)
    avx2::march_sum_lanes<simd::Avx2<T>, T>(buf, stride, n_minor, n_major, ray[0], ray[1], ray[2], out);
  else
    portable::march_sum_lanes<simd::Scalar<T>, T>(buf, stride, n_minor, n_major, ray[0], ray[1], ray[2], out);
}

// Forward for batches: groups of `lanes` images share every ray's arithmetic.
template <typename T>
void forward_lanes_impl(const T* img, const T* rays, T* out, int64_t batch, int64_t n_views, int64_t n_det,
                        int64_t ny, int64_t nx) {
  const bool simd = use_avx2();
  const int64_t lanes = image_lanes<T>(simd);
  const int64_t groups = (batch + lanes - 1) / lanes;
  const int64_t rows_size = (ny + 2 * kPad) * nx * lanes, cols_size = (nx + 2 * kPad) * ny * lanes;
  std::vector<T> padded(groups * (rows_size + cols_size));
  at::parallel_for(0, groups, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      T* rows = padded.data() + g * (rows_size + cols_size);
      interleave_padded(img, batch, g * lanes, lanes, ny, nx, rows, rows + rows_size);
    }
  });
  at::parallel_for(0, groups * n_views, 1, [&](int64_t t0, int64_t t1) {
    std::vector<T> lane_out(n_det * lanes);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t g = t / n_views, v = t % n_views;
      const T* rows = padded.data() + g * (rows_size + cols_size);
      const T* cols = rows + rows_size;
      const T* ray = rays + v * n_det * RAY_FIELDS;
      for (int64_t c = 0; c < n_det; ++c, ray += RAY_FIELDS) {
        if (ray[3] != T(0))
          march_sum_lanes(simd, rows, nx, ny, nx, ray, lane_out.data() + c * lanes);
        else
          march_sum_lanes(simd, cols, ny, nx, ny, ray, lane_out.data() + c * lanes);
      }
      for (int64_t l = 0; l < lanes && g * lanes + l < batch; ++l) {
        T* o = out + ((g * lanes + l) * n_views + v) * n_det;
        for (int64_t c = 0; c < n_det; ++c) o[c] = lane_out[c * lanes + l];
      }
    }
  });
}

// bins[q + 1] = the view's detector bin of point q = -1 .. n_q on a line.
template <typename T>
void line_bins(bool simd, const T* line_map, bool curved, int64_t n_q, T* bins) {
  if (simd)
    avx2::line_bins<simd::Avx2<T>, T>(line_map, curved, n_q, bins);
  else
    portable::line_bins<simd::Scalar<T>, T>(line_map, curved, n_q, bins);
}

// A maximal run of consecutive detector bins of one view whose rays share the major axis.
struct RayRun {
  int32_t first, last;
  bool x_major;
};

// The ray table reorganised for the line-by-line adjoint: structure of
// arrays, the runs of each view, and the per-view candidate-search margin.
template <typename T>
struct RayTables {
  static constexpr int64_t kWindowPad = 16;  // SIMD windows read up to 2 * 8 - 1 past the last ray
  std::vector<T> alpha, beta, weight, margin;
  std::vector<std::vector<RayRun>> runs;
  const T* views;
  int64_t n_det, n_det_padded;  // per-view rows of alpha/beta/weight have n_det_padded entries

  RayTables(const T* rays, const T* view_table, int64_t n_views, int64_t n_det_)
      : alpha(n_views * (n_det_ + kWindowPad)), beta(n_views * (n_det_ + kWindowPad)),
        weight(n_views * (n_det_ + kWindowPad)), margin(n_views), runs(n_views), views(view_table), n_det(n_det_),
        n_det_padded(n_det_ + kWindowPad) {
    for (int64_t v = 0; v < n_views; ++v) {
      for (int64_t c = 0; c < n_det; ++c) {
        const T* r = rays + (v * n_det + c) * RAY_FIELDS;
        alpha[v * n_det_padded + c] = r[0];
        beta[v * n_det_padded + c] = r[1];
        weight[v * n_det_padded + c] = r[2];
        const bool x_major = r[3] != T(0);
        if (c == 0 || runs[v].back().x_major != x_major)
          runs[v].push_back(RayRun{int32_t(c), int32_t(c), x_major});
        else
          runs[v].back().last = int32_t(c);
      }
      // Bins are found with a margin against rounding (float32 view maps, the
      // approximate atan of curved detectors); extra candidates get zero weight.
      margin[v] = T(0.01) + T(1e-5) * std::abs(view_table[v * VIEW_FIELDS + 6]);
    }
  }

  bool has_major(int64_t v, bool x_major) const {
    for (const RayRun& run : runs[v])
      if (run.x_major == x_major) return true;
    return false;
  }

  // The view map restricted to a line: bin(q) = from (num0 + num1 q) / (den0 + den1 q);
  // a column j (x_pass, pixels i = q) or a row i (pixels j = q).
  void line_map(int64_t v, bool x_pass, int64_t line, T* out) const {
    const T* view = views + v * VIEW_FIELDS;
    const T l = T(line);
    if (x_pass) {
      out[0] = view[0] + view[2] * l;
      out[1] = view[1];
      out[2] = view[3] + view[5] * l;
      out[3] = view[4];
    } else {
      out[0] = view[0] + view[1] * l;
      out[1] = view[2];
      out[2] = view[3] + view[4] * l;
      out[3] = view[5];
    }
    out[4] = view[6];
    out[5] = view[7];
  }
};

// Adjoint of single images, pixel-driven (see the file comment): SIMD lanes
// run over the pixels of a line, gathering the rays that reach each pixel.
template <typename T>
void adjoint_impl(const T* sino, const T* rays, const T* views, T* out, int64_t batch, int64_t n_views,
                  int64_t n_det, int64_t ny, int64_t nx) {
  const bool simd = use_avx2();
  const RayTables<T> tables(rays, views, n_views, n_det);
  // Sinograms with each view's row padded like the tables (windowed loads).
  const int64_t n_det_padded = tables.n_det_padded;
  std::vector<T> sino_padded(batch * n_views * n_det_padded, T(0));
  for (int64_t r = 0; r < batch * n_views; ++r)
    std::copy(sino + r * n_det, sino + (r + 1) * n_det, sino_padded.begin() + r * n_det_padded);
  // One pass per major axis: x-major rays fill columns (lines j, pixels i)
  // into a transposed buffer, y-major rays fill rows (lines i, pixels j).
  std::vector<T> transposed(batch * nx * ny);
  for (int pass = 0; pass < 2; ++pass) {
    const bool x_pass = pass == 0;
    const int64_t n_lines = x_pass ? nx : ny, n_q = x_pass ? ny : nx;
    at::parallel_for(0, batch * n_lines, 1, [&](int64_t t0, int64_t t1) {
      constexpr int64_t kMaxWidth = 8;
      std::vector<T> bins(n_q + 2 + 2 * kMaxWidth), acc(n_q + kMaxWidth);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t b = t / n_lines, line = t % n_lines;
        std::fill(acc.begin(), acc.end(), T(0));
        for (int64_t v = 0; v < n_views; ++v) {
          if (!tables.has_major(v, x_pass)) continue;
          T line_map[6];
          tables.line_map(v, x_pass, line, line_map);
          const bool curved = line_map[4] != T(0);
          line_bins(simd, line_map, curved, n_q, bins.data());
          const T* s = sino_padded.data() + (b * n_views + v) * n_det_padded;
          const T* va = tables.alpha.data() + v * n_det_padded;
          const T* vb = tables.beta.data() + v * n_det_padded;
          const T* vw = tables.weight.data() + v * n_det_padded;
          for (const RayRun& run : tables.runs[v]) {
            if (run.x_major != x_pass) continue;
            if (simd)
              avx2::accumulate_line<simd::Avx2<T>, T>(va, vb, vw, s, T(line), run.first, run.last, bins.data(),
                                                      tables.margin[v], n_q, acc.data());
            else
              portable::accumulate_line<simd::Scalar<T>, T>(va, vb, vw, s, T(line), run.first, run.last, bins.data(),
                                                            tables.margin[v], n_q, acc.data());
          }
        }
        if (x_pass) {
          std::copy(acc.begin(), acc.begin() + n_q, transposed.begin() + (b * nx + line) * ny);
        } else {
          T* o = out + (b * ny + line) * nx;
          const T* tr = transposed.data() + b * nx * ny;
          for (int64_t j = 0; j < nx; ++j) o[j] = acc[j] + tr[j * ny + line];
        }
      }
    });
  }
}

// Adjoint for batches: the line-by-line gather of adjoint_impl with the
// candidate search done once per pixel and view for `lanes` sinograms.
template <typename T>
void adjoint_lanes_impl(const T* sino, const T* rays, const T* views, T* out, int64_t batch, int64_t n_views,
                        int64_t n_det, int64_t ny, int64_t nx) {
  const bool simd = use_avx2();
  const int64_t lanes = image_lanes<T>(simd);
  const int64_t groups = (batch + lanes - 1) / lanes;
  const RayTables<T> tables(rays, views, n_views, n_det);
  // Sinograms interleaved per group: (n_views, n_det, lanes).
  std::vector<T> sino_lanes(groups * n_views * n_det * lanes, T(0));
  at::parallel_for(0, groups * n_views, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t g = t / n_views, v = t % n_views;
      T* dst = sino_lanes.data() + t * n_det * lanes;
      for (int64_t l = 0; l < lanes && g * lanes + l < batch; ++l) {
        const T* src = sino + ((g * lanes + l) * n_views + v) * n_det;
        for (int64_t c = 0; c < n_det; ++c) dst[c * lanes + l] = src[c];
      }
    }
  });
  std::vector<T> transposed(groups * nx * ny * lanes);  // x-major results, (nx, ny, lanes) per group
  for (int pass = 0; pass < 2; ++pass) {
    const bool x_pass = pass == 0;
    const int64_t n_lines = x_pass ? nx : ny, n_q = x_pass ? ny : nx;
    at::parallel_for(0, groups * n_lines, 1, [&](int64_t t0, int64_t t1) {
      constexpr int64_t kMaxWidth = 8;
      std::vector<T> bins(n_q + 2 + 2 * kMaxWidth), acc((n_q + kMaxWidth) * lanes);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t g = t / n_lines, line = t % n_lines;
        std::fill(acc.begin(), acc.end(), T(0));
        for (int64_t v = 0; v < n_views; ++v) {
          if (!tables.has_major(v, x_pass)) continue;
          T line_map[6];
          tables.line_map(v, x_pass, line, line_map);
          const bool curved = line_map[4] != T(0);
          line_bins(simd, line_map, curved, n_q, bins.data());
          const T* sl = sino_lanes.data() + (g * n_views + v) * n_det * lanes;
          const T* va = tables.alpha.data() + v * tables.n_det_padded;
          const T* vb = tables.beta.data() + v * tables.n_det_padded;
          const T* vw = tables.weight.data() + v * tables.n_det_padded;
          for (const RayRun& run : tables.runs[v]) {
            if (run.x_major != x_pass) continue;
            if (simd)
              avx2::accumulate_line_lanes<simd::Avx2<T>, T>(va, vb, vw, sl, T(line), run.first, run.last, bins.data(),
                                                            tables.margin[v], n_q, acc.data());
            else
              portable::accumulate_line_lanes<simd::Scalar<T>, T>(va, vb, vw, sl, T(line), run.first, run.last,
                                                                  bins.data(), tables.margin[v], n_q, acc.data());
          }
        }
        T* tr = transposed.data() + g * nx * ny * lanes;
        if (x_pass) {
          std::copy(acc.begin(), acc.begin() + n_q * lanes, tr + line * ny * lanes);
        } else {
          for (int64_t l = 0; l < lanes && g * lanes + l < batch; ++l) {
            T* o = out + ((g * lanes + l) * ny + line) * nx;
            for (int64_t j = 0; j < nx; ++j) o[j] = acc[j * lanes + l] + tr[(j * ny + line) * lanes + l];
          }
        }
      }
    });
  }
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
    auto impl = batch > 1 ? forward_lanes_impl<scalar_t> : forward_impl<scalar_t>;
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
  auto out = at::zeros({batch, ny, nx}, sino.options());
  if (out.numel() == 0 || n_views == 0) return out;
  auto view_table = views.contiguous();
  AT_DISPATCH_FLOATING_TYPES(sino.scalar_type(), "joseph2d_adjoint_cpu", [&] {
    auto impl = batch > 1 ? adjoint_lanes_impl<scalar_t> : adjoint_impl<scalar_t>;
    impl(s.data_ptr<scalar_t>(), ray_table.data_ptr<scalar_t>(), view_table.data_ptr<scalar_t>(),
         out.data_ptr<scalar_t>(), batch, n_views, n_det, ny, nx);
  });
  return out;
}

at::Tensor joseph2d_adjoint_gather_cpu(const at::Tensor& sino, const at::Tensor& rays, const at::Tensor& views,
                                       int64_t ny, int64_t nx) {
  check_joseph2d_adjoint_inputs(sino, rays, views, ny, nx);
  TORCH_CHECK(sino.device().is_cpu(), "joseph2d_adjoint_gather_cpu: expected CPU tensors");
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

std::tuple<at::Tensor, at::Tensor> joseph2d_tables(const at::Tensor& vectors, int64_t kind, int64_t n_det,
                                                   int64_t ny, int64_t nx, at::ArrayRef<double> spacing_offset) {
  TORCH_CHECK(vectors.dim() == 2 && vectors.size(1) == 6, "joseph2d_tables: vectors must have shape (n_views, 6)");
  TORCH_CHECK(vectors.scalar_type() == at::kDouble && vectors.device().is_cpu(),
              "joseph2d_tables: vectors must be a float64 CPU tensor");
  TORCH_CHECK(kind >= kParallel && kind <= kFanCurved, "joseph2d_tables: unknown geometry kind ", kind);
  TORCH_CHECK(n_det >= 1 && ny >= 1 && nx >= 1, "joseph2d_tables: sizes must be positive");
  TORCH_CHECK(spacing_offset.size() == 4, "joseph2d_tables: expected [sy, sx, oy, ox]");
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
}

void check_joseph2d_adjoint_inputs(const at::Tensor& sino, const at::Tensor& rays, const at::Tensor& views, int64_t ny,
                                   int64_t nx) {
  TORCH_CHECK(sino.dim() == 3, "joseph2d: sinogram must have shape (batch, n_views, n_det), got ", sino.sizes());
  check_tables(sino, rays, views, "sinogram");
  TORCH_CHECK(rays.size(0) == sino.size(1) && rays.size(1) == sino.size(2), "joseph2d: sinogram shape ",
              sino.sizes(), " does not match the ray table ", rays.sizes());
  TORCH_CHECK(ny >= 1 && nx >= 1, "joseph2d: image size must be positive");
}

}  // namespace known_ops
