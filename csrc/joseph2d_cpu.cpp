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
// Adjoint: the literal transpose of the forward (scatter along each ray, the
// same positions and weights).  Views are split into a fixed number of chunks
// that scatter into private buffers, summed in chunk order: no atomics, and
// bitwise the same result whatever the number of threads.  (The CUDA adjoint
// gathers pixel by pixel instead, gather_view in joseph2d.h; the CPU runs that
// form too, as joseph2d_adjoint_gather, so the tests check the GPU's math.)
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
    adjoint_scatter_impl<scalar_t>(s.data_ptr<scalar_t>(), ray_table.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                                   batch, n_views, n_det, ny, nx);
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
