// CPU loops of the 2D Joseph projector pair.  The arithmetic comes from
// joseph2d.h; this file only arranges memory and threads.
//
// Forward: ray-driven.  The image is copied once into two zero-padded
// buffers, one as is (for x-major rays, which step along columns and read two
// neighbouring rows) and one transposed (for y-major rays), so both kinds of
// ray read memory the same cache-friendly way and the inner loop needs no
// bounds checks.
//
// Adjoint: the exact transpose of the forward, ray-driven as well (scatter).
// Views are split into a fixed number of chunks per image, each chunk scatters
// into private buffers, and the buffers are summed in chunk order: no atomics,
// and bitwise the same result whatever the number of threads.
#include "joseph2d_cpu.h"

#include <ATen/Parallel.h>
#include <ATen/Dispatch.h>

#include <algorithm>
#include <vector>

#include "joseph2d.h"

namespace known_ops {
namespace {

constexpr int64_t kPad = 2;  // zero rows on each side of the interpolated axis

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

// Line integral along one ray: march m over [0, n_major), interpolate the
// padded buffer `buf` (rows of length `stride` = n_major) at alpha + beta m.
template <typename T>
inline T march_sum(const T* buf, int64_t stride, int64_t n_minor, int64_t n_major, T alpha, T beta) {
  int64_t first, last;
  // Samples outside (-1, n_minor) have zero weight; the margin of 0.5 keeps
  // every index inside the padding even after rounding.
  clip_march<T>(alpha, beta, T(-1.5), T(n_minor) + T(0.5), n_major, &first, &last);
  T acc0 = 0, acc1 = 0;
  const T shifted = alpha + T(kPad);
  int64_t m = first;
  // Two independent accumulators break the floating-point add chain.
  for (; m + 1 <= last; m += 2) {
    const T p0 = shifted + beta * T(m);
    const T p1 = shifted + beta * T(m + 1);
    const int64_t k0 = int64_t(p0), k1 = int64_t(p1);  // p >= 0.5: truncation is floor
    const T f0 = p0 - T(k0), f1 = p1 - T(k1);
    const T* r0 = buf + k0 * stride + m;
    const T* r1 = buf + k1 * stride + m + 1;
    acc0 += r0[0] + f0 * (r0[stride] - r0[0]);
    acc1 += r1[0] + f1 * (r1[stride] - r1[0]);
  }
  if (m <= last) {
    const T p0 = shifted + beta * T(m);
    const int64_t k0 = int64_t(p0);
    const T f0 = p0 - T(k0);
    const T* r0 = buf + k0 * stride + m;
    acc0 += r0[0] + f0 * (r0[stride] - r0[0]);
  }
  return acc0 + acc1;
}

// Transpose of march_sum: adds value * (interpolation weights) into `buf`.
template <typename T>
inline void march_scatter(T* buf, int64_t stride, int64_t n_minor, int64_t n_major, T alpha, T beta, T value) {
  int64_t first, last;
  clip_march<T>(alpha, beta, T(-1.5), T(n_minor) + T(0.5), n_major, &first, &last);
  const T shifted = alpha + T(kPad);
  for (int64_t m = first; m <= last; ++m) {
    const T p = shifted + beta * T(m);
    const int64_t k = int64_t(p);
    const T f = p - T(k);
    T* r = buf + k * stride + m;
    const T upper = value * f;
    r[0] += value - upper;  // value * (1 - f)
    r[stride] += upper;
  }
}

template <typename T>
void forward_impl(const T* img, const T* rays, T* out, int64_t batch, int64_t n_views, int64_t n_det, int64_t ny,
                  int64_t nx) {
  const int64_t rows_size = (ny + 2 * kPad) * nx, cols_size = (nx + 2 * kPad) * ny;
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
        const T sum = x_major ? march_sum(rows, nx, ny, nx, ray[0], ray[1]) : march_sum(cols, ny, nx, ny, ray[0], ray[1]);
        o[c] = ray[2] * sum;
      }
    }
  });
}

template <typename T>
void adjoint_impl(const T* sino, const T* rays, T* out, int64_t batch, int64_t n_views, int64_t n_det, int64_t ny,
                  int64_t nx) {
  const int64_t rows_size = (ny + 2 * kPad) * nx, cols_size = (nx + 2 * kPad) * ny;
  // A fixed chunking (independent of the thread count) keeps results bitwise
  // reproducible; enough chunks to keep the cores busy for small batches,
  // bounded so the private buffers stay a small multiple of the output.
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(n_views, (8 + batch - 1) / batch));
  const int64_t views_per_chunk = (n_views + chunks - 1) / chunks;
  std::vector<T> partial(batch * chunks * (rows_size + cols_size), T(0));
  at::parallel_for(0, batch * chunks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / chunks, k = t % chunks;
      T* rows = partial.data() + t * (rows_size + cols_size);
      T* cols = rows + rows_size;
      const int64_t v1 = std::min(n_views, (k + 1) * views_per_chunk);
      for (int64_t v = k * views_per_chunk; v < v1; ++v) {
        const T* ray = rays + v * n_det * RAY_FIELDS;
        const T* s = sino + (b * n_views + v) * n_det;
        for (int64_t c = 0; c < n_det; ++c, ray += RAY_FIELDS) {
          const T value = ray[2] * s[c];
          if (value == T(0)) continue;
          if (ray[3] != T(0))
            march_scatter(rows, nx, ny, nx, ray[0], ray[1], value);
          else
            march_scatter(cols, ny, nx, ny, ray[0], ray[1], value);
        }
      }
    }
  });
  // out[b, i, j] = sum_k rows_k[i + pad, j] + cols_k[j + pad, i], in chunk order.
  at::parallel_for(0, batch * ny, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / ny, i = t % ny;
      T* o = out + t * nx;
      std::fill(o, o + nx, T(0));
      for (int64_t k = 0; k < chunks; ++k) {
        const T* rows = partial.data() + (b * chunks + k) * (rows_size + cols_size);
        const T* cols = rows + rows_size;
        const T* r = rows + (i + kPad) * nx;
        for (int64_t j = 0; j < nx; ++j) o[j] += r[j] + cols[(j + kPad) * ny + i];
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
    forward_impl<scalar_t>(img.data_ptr<scalar_t>(), ray_table.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), batch,
                           n_views, n_det, ny, nx);
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
  AT_DISPATCH_FLOATING_TYPES(sino.scalar_type(), "joseph2d_adjoint_cpu", [&] {
    adjoint_impl<scalar_t>(s.data_ptr<scalar_t>(), ray_table.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), batch,
                           n_views, n_det, ny, nx);
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
