// CPU loops of the voxel-driven projector pair (model="voxel"); the per-voxel
// arithmetic is in voxel.h.
//
// Back-projection (adjoint): voxel by voxel, a sum over the views of the
// interpolated detector value times the pair's weight; threads take rows (2D)
// or slices (3D).  Forward: its transpose, every voxel splatted onto the
// detector with the same taps and weights; threads take views, each view's
// projection being written by one thread only, so the result is bitwise the
// same for any number of threads.
#include "voxel_cpu.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <vector>

#include "cpu_parallel.h"
#include "joseph3d_cpu.h"
#include "voxel.h"

namespace known_ops {
namespace {

void check_data(const at::Tensor& t, int64_t dim, const char* what) {
  TORCH_CHECK(t.dim() == dim, "voxel: ", what, " must have ", dim, " dimensions, got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, "voxel: ", what,
              " must be float32 or float64, got ", t.scalar_type());
  TORCH_CHECK(t.device().is_cpu(), "voxel: expected CPU tensors, got ", what, " on ", t.device());
}

void check_views_2d(const at::Tensor& data, const at::Tensor& views, at::ArrayRef<double> spacing) {
  TORCH_CHECK(views.dim() == 2 && views.size(1) == VIEW_FIELDS, "voxel2d: view table must have shape (n_views, ",
              VIEW_FIELDS, "), got ", views.sizes());
  TORCH_CHECK(views.scalar_type() == data.scalar_type() && views.device() == data.device(),
              "voxel2d: data and view table must have the same dtype and device");
  TORCH_CHECK(spacing.size() == 2 && spacing[0] > 0 && spacing[1] > 0, "voxel2d: spacing must be [sy, sx] > 0");
}

template <typename T>
void voxel2d_forward_impl(const T* img, const T* views, const T* fdk, T* out, int64_t batch, int64_t n_views,
                          int64_t n_det, int64_t ny, int64_t nx, T sy, T sx) {
  parallel_items(n_views, [&](int64_t v0, int64_t v1) {
    for (int64_t v = v0; v < v1; ++v) {
      const T* view = views + v * VIEW_FIELDS;
      for (int64_t i = 0; i < ny; ++i)
        for (int64_t j = 0; j < nx; ++j) {
          T w, f;
          int64_t c;
          const T b = voxel2d_bin(view, sy, sx, T(i), T(j), fdk ? fdk[v] : T(0), &w);
          if (!linear_taps(b, n_det, &c, &f)) continue;
          for (int64_t k = 0; k < batch; ++k) {
            const T value = w * img[(k * ny + i) * nx + j];
            T* o = out + (k * n_views + v) * n_det;
            if (c >= 0) o[c] += value * (T(1) - f);
            if (c + 1 < n_det) o[c + 1] += value * f;
          }
        }
    }
  });
}

template <typename T>
void voxel2d_adjoint_impl(const T* sino, const T* views, const T* fdk, T* out, int64_t batch, int64_t n_views,
                          int64_t n_det, int64_t ny, int64_t nx, T sy, T sx) {
  at::parallel_for(0, ny, 1, [&](int64_t i0, int64_t i1) {
    std::vector<T> acc(batch);
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = 0; j < nx; ++j) {
        std::fill(acc.begin(), acc.end(), T(0));
        for (int64_t v = 0; v < n_views; ++v) {
          T w, f;
          int64_t c;
          const T b = voxel2d_bin(views + v * VIEW_FIELDS, sy, sx, T(i), T(j), fdk ? fdk[v] : T(0), &w);
          if (!linear_taps(b, n_det, &c, &f)) continue;
          for (int64_t k = 0; k < batch; ++k) {
            const T* s = sino + (k * n_views + v) * n_det;
            T value = T(0);
            if (c >= 0) value += (T(1) - f) * s[c];
            if (c + 1 < n_det) value += f * s[c + 1];
            acc[k] += w * value;
          }
        }
        for (int64_t k = 0; k < batch; ++k) out[(k * ny + i) * nx + j] = acc[k];
      }
  });
}

// The four bilinear taps of a voxel on the detector (rows r, r + 1; cols c, c + 1).
template <typename T>
struct DetectorTaps {
  bool hit;
  int64_t r, c;
  T fr, fc, w;
};
template <typename T>
DetectorTaps<T> detector_taps(const T* frame_t, T fdk, int64_t k, int64_t i, int64_t j, int64_t n_rows,
                              int64_t n_cols) {
  DetectorTaps<T> t{};
  T col, row;
  voxel3d_position(frame_t, T(k), T(i), T(j), fdk, &col, &row, &t.w);
  t.hit = linear_taps(col, n_cols, &t.c, &t.fc) && linear_taps(row, n_rows, &t.r, &t.fr);
  return t;
}

template <typename T>
void voxel3d_forward_impl(const T* vol, const T* frames_t, const T* fdk, T* out, int64_t batch, int64_t n_views,
                          int64_t n_rows, int64_t n_cols, const int64_t* n) {
  const int64_t vol_size = n[0] * n[1] * n[2], view_size = n_rows * n_cols;
  parallel_items(n_views, [&](int64_t v0, int64_t v1) {
    for (int64_t v = v0; v < v1; ++v) {
      const T* f = frames_t + v * FRAME3_FIELDS;
      for (int64_t k = 0; k < n[0]; ++k)
        for (int64_t i = 0; i < n[1]; ++i)
          for (int64_t j = 0; j < n[2]; ++j) {
            const DetectorTaps<T> t = detector_taps(f, fdk ? fdk[v] : T(0), k, i, j, n_rows, n_cols);
            if (!t.hit) continue;
            const bool r0 = t.r >= 0, r1 = t.r + 1 < n_rows, c0 = t.c >= 0, c1 = t.c + 1 < n_cols;
            for (int64_t b = 0; b < batch; ++b) {
              const T value = t.w * vol[b * vol_size + (k * n[1] + i) * n[2] + j];
              T* o = out + (b * n_views + v) * view_size + t.r * n_cols + t.c;
              const T lower = value * (T(1) - t.fr), upper = value * t.fr;
              if (r0 && c0) o[0] += lower * (T(1) - t.fc);
              if (r0 && c1) o[1] += lower * t.fc;
              if (r1 && c0) o[n_cols] += upper * (T(1) - t.fc);
              if (r1 && c1) o[n_cols + 1] += upper * t.fc;
            }
          }
    }
  });
}

template <typename T>
void voxel3d_adjoint_impl(const T* proj, const T* frames_t, const T* fdk, T* out, int64_t batch, int64_t n_views,
                          int64_t n_rows, int64_t n_cols, const int64_t* n) {
  const int64_t vol_size = n[0] * n[1] * n[2], view_size = n_rows * n_cols;
  at::parallel_for(0, n[0] * n[1], 1, [&](int64_t t0, int64_t t1) {
    std::vector<T> acc(batch);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t k = t / n[1], i = t % n[1];
      for (int64_t j = 0; j < n[2]; ++j) {
        std::fill(acc.begin(), acc.end(), T(0));
        for (int64_t v = 0; v < n_views; ++v) {
          const DetectorTaps<T> d =
              detector_taps(frames_t + v * FRAME3_FIELDS, fdk ? fdk[v] : T(0), k, i, j, n_rows, n_cols);
          if (!d.hit) continue;
          const bool r0 = d.r >= 0, r1 = d.r + 1 < n_rows, c0 = d.c >= 0, c1 = d.c + 1 < n_cols;
          for (int64_t b = 0; b < batch; ++b) {
            const T* p = proj + (b * n_views + v) * view_size + d.r * n_cols + d.c;
            T lower = T(0), upper = T(0);
            if (r0 && c0) lower += (T(1) - d.fc) * p[0];
            if (r0 && c1) lower += d.fc * p[1];
            if (r1 && c0) upper += (T(1) - d.fc) * p[n_cols];
            if (r1 && c1) upper += d.fc * p[n_cols + 1];
            acc[b] += d.w * ((T(1) - d.fr) * lower + d.fr * upper);
          }
        }
        for (int64_t b = 0; b < batch; ++b) out[b * vol_size + t * n[2] + j] = acc[b];
      }
    }
  });
}

// The optional per-view FDK constants, as a contiguous tensor of the data's dtype (undefined: none).
at::Tensor fdk_constants(const c10::optional<at::Tensor>& fdk, const at::Tensor& data, int64_t n_views) {
  if (!fdk.has_value() || !fdk->defined()) return at::Tensor();
  TORCH_CHECK(fdk->dim() == 1 && fdk->size(0) == n_views, "voxel: fdk_weights must have shape (n_views,) = (", n_views,
              ",), got ", fdk->sizes());
  TORCH_CHECK(fdk->device() == data.device(), "voxel: fdk_weights must be on the data's device");
  return fdk->to(data.scalar_type()).contiguous();
}

template <typename T>
const T* pointer_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

}  // namespace

at::Tensor voxel2d_forward_cpu(const at::Tensor& image, const at::Tensor& views, int64_t n_det,
                               at::ArrayRef<double> spacing, const c10::optional<at::Tensor>& fdk_weights) {
  check_data(image, 3, "image (batch, ny, nx)");
  check_views_2d(image, views, spacing);
  TORCH_CHECK(n_det >= 1, "voxel2d: n_det must be positive");
  auto img = image.contiguous();
  auto vt = views.contiguous();
  const int64_t batch = img.size(0), ny = img.size(1), nx = img.size(2), n_views = vt.size(0);
  auto out = at::zeros({batch, n_views, n_det}, img.options());
  const auto fdk = fdk_constants(fdk_weights, img, n_views);
  if (out.numel() == 0 || img.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(img.scalar_type(), "voxel2d_forward_cpu", [&] {
    voxel2d_forward_impl<scalar_t>(img.data_ptr<scalar_t>(), vt.data_ptr<scalar_t>(), pointer_or_null<scalar_t>(fdk),
                                   out.data_ptr<scalar_t>(),
                                   batch, n_views, n_det, ny, nx, scalar_t(spacing[0]), scalar_t(spacing[1]));
  });
  return out;
}

at::Tensor voxel2d_adjoint_cpu(const at::Tensor& sino, const at::Tensor& views, int64_t ny, int64_t nx,
                               at::ArrayRef<double> spacing, const c10::optional<at::Tensor>& fdk_weights) {
  check_data(sino, 3, "sinogram (batch, n_views, n_det)");
  check_views_2d(sino, views, spacing);
  TORCH_CHECK(views.size(0) == sino.size(1), "voxel2d: sinogram has ", sino.size(1), " views but the table ",
              views.size(0));
  TORCH_CHECK(ny >= 1 && nx >= 1, "voxel2d: image size must be positive");
  auto s = sino.contiguous();
  auto vt = views.contiguous();
  const int64_t batch = s.size(0), n_views = s.size(1), n_det = s.size(2);
  auto out = at::zeros({batch, ny, nx}, s.options());
  const auto fdk = fdk_constants(fdk_weights, s, n_views);
  if (out.numel() == 0 || s.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "voxel2d_adjoint_cpu", [&] {
    voxel2d_adjoint_impl<scalar_t>(s.data_ptr<scalar_t>(), vt.data_ptr<scalar_t>(), pointer_or_null<scalar_t>(fdk),
                                   out.data_ptr<scalar_t>(), batch,
                                   n_views, n_det, ny, nx, scalar_t(spacing[0]), scalar_t(spacing[1]));
  });
  return out;
}

at::Tensor voxel3d_forward_cpu(const at::Tensor& volume, const at::Tensor& frames, int64_t n_rows, int64_t n_cols,
                               const c10::optional<at::Tensor>& fdk_weights) {
  check_joseph3d_forward_inputs(volume, frames, n_rows, n_cols);
  check_data(volume, 4, "volume (batch, nz, ny, nx)");
  auto vol = volume.contiguous();
  auto frames_t = frames.to(vol.scalar_type()).contiguous();  // positions in the data's precision
  const int64_t batch = vol.size(0), n_views = frames.size(0);
  const int64_t n[3] = {vol.size(1), vol.size(2), vol.size(3)};
  auto out = at::zeros({batch, n_views, n_rows, n_cols}, vol.options());
  const auto fdk = fdk_constants(fdk_weights, vol, n_views);
  if (out.numel() == 0 || vol.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(vol.scalar_type(), "voxel3d_forward_cpu", [&] {
    voxel3d_forward_impl<scalar_t>(vol.data_ptr<scalar_t>(), frames_t.data_ptr<scalar_t>(),
                                   pointer_or_null<scalar_t>(fdk), out.data_ptr<scalar_t>(),
                                   batch, n_views, n_rows, n_cols, n);
  });
  return out;
}

at::Tensor voxel3d_adjoint_cpu(const at::Tensor& proj, const at::Tensor& frames, int64_t nz, int64_t ny, int64_t nx,
                               const c10::optional<at::Tensor>& fdk_weights) {
  check_joseph3d_adjoint_inputs(proj, frames, nz, ny, nx);
  check_data(proj, 4, "projections (batch, n_views, n_rows, n_cols)");
  auto p = proj.contiguous();
  auto frames_t = frames.to(p.scalar_type()).contiguous();
  const int64_t batch = p.size(0), n_views = p.size(1), n_rows = p.size(2), n_cols = p.size(3);
  const int64_t n[3] = {nz, ny, nx};
  auto out = at::zeros({batch, nz, ny, nx}, p.options());
  const auto fdk = fdk_constants(fdk_weights, p, n_views);
  if (out.numel() == 0 || p.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "voxel3d_adjoint_cpu", [&] {
    voxel3d_adjoint_impl<scalar_t>(p.data_ptr<scalar_t>(), frames_t.data_ptr<scalar_t>(),
                                   pointer_or_null<scalar_t>(fdk), out.data_ptr<scalar_t>(),
                                   batch, n_views, n_rows, n_cols, n);
  });
  return out;
}

}  // namespace known_ops
