// CPU loops of the voxel-driven projector pair (model="voxel"); the per-voxel
// arithmetic (positions, weights, taps, interpolation and its transpose) is in
// voxel.h, shared with the CUDA kernels (voxel_cuda.cu).
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

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu_parallel.h"
#include "joseph2d_cpu.h"
#include "joseph3d_cpu.h"
#include "simd.h"
#include "voxel.h"

namespace known_ops {
namespace {

#define KO_KERNELS "voxel_cpu_kernels.inc"
#include "simd_builds.inc"  // namespaces portable and avx2

// The row loops of the build this CPU runs (simd::use_avx2).
template <typename T>
struct RowLoops {
  void (*positions_2d)(const T*, T, T, int64_t, int64_t, T, T*, T*);
  void (*accumulate)(const T*, const T*, const T*, int64_t, int64_t, T*);
  void (*positions_3d)(const T*, T, int64_t, int64_t, int64_t, T*, T*, T*);
  void (*accumulate_3d)(const T*, const T*, const T*, const T*, int64_t, int64_t, int64_t, T*);
  static RowLoops pick() {
    if (simd::use_avx2())
      return {avx2::voxel2d_row<T>, avx2::accumulate_row<simd::Avx2<T>, T>, avx2::voxel3d_row<T>,
              avx2::accumulate_row_3d<simd::Avx2<T>, T>};
    return {portable::voxel2d_row<T>, portable::accumulate_row<simd::Scalar<T>, T>, portable::voxel3d_row<T>,
            portable::accumulate_row_3d<simd::Scalar<T>, T>};
  }
};

// Row buffers are padded to a multiple of the widest SIMD width (8 floats).
constexpr int64_t kRowPad = 8;
int64_t padded_length(int64_t n) { return (n + kRowPad - 1) / kRowPad * kRowPad; }

// The splat's accumulation on the CPU: each output is written by one thread.
struct AddTo {
  template <typename T>
  void operator()(T* p, T value) const {
    *p += value;
  }
};

void check_data(const at::Tensor& t, int64_t dim, const char* what) {
  TORCH_CHECK(t.dim() == dim, "voxel: ", what, " must have ", dim, " dimensions, got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, "voxel: ", what,
              " must be float32 or float64, got ", t.scalar_type());
}

void check_views_2d(const at::Tensor& data, const at::Tensor& views, at::ArrayRef<double> spacing) {
  TORCH_CHECK(views.dim() == 2 && views.size(1) == VIEW_FIELDS, "voxel2d: view table must have shape (n_views, ",
              VIEW_FIELDS, "), got ", views.sizes());
  TORCH_CHECK(views.scalar_type() == data.scalar_type() && views.device() == data.device(),
              "voxel2d: data and view table must have the same dtype and device");
  TORCH_CHECK(spacing.size() == 2 && spacing[0] > 0 && spacing[1] > 0, "voxel2d: spacing must be [sy, sx] > 0");
}

// The optional per-view FDK constants, as a contiguous tensor of the data's dtype (undefined: none).
at::Tensor fdk_constants(const c10::optional<at::Tensor>& fdk, const at::Tensor& data, int64_t n_views) {
  if (!fdk.has_value() || !fdk->defined()) return at::Tensor();
  TORCH_CHECK(fdk->dim() == 1 && fdk->size(0) == n_views, "voxel: fdk_weights must have shape (n_views,) = (", n_views,
              ",), got ", fdk->sizes());
  TORCH_CHECK(fdk->device() == data.device(), "voxel: fdk_weights must be on the data's device");
  auto constants = fdk->to(data.scalar_type()).contiguous();
  if (constants.device().is_cpu()) {  // (CUDA: not read, which would synchronise the device)
    AT_DISPATCH_FLOATING_TYPES(constants.scalar_type(), "voxel_fdk_constants", [&] {
      const scalar_t* k = constants.data_ptr<scalar_t>();
      for (int64_t v = 0; v < n_views; ++v)
        TORCH_CHECK(std::isfinite(k[v]) && k[v] > scalar_t(0), "voxel: fdk_weights must be positive and finite, got ",
                    k[v], " for view ", v);
    });
  }
  return constants;
}

template <typename T>
void voxel2d_forward_impl(const T* img, const T* views, const T* fdk, T* out, int64_t batch, int64_t n_views,
                          int64_t n_det, int64_t ny, int64_t nx, T sy, T sx) {
  const RowLoops<T> loops = RowLoops<T>::pick();
  parallel_items(n_views, [&](int64_t v0, int64_t v1) {
    std::vector<T> positions(nx), weights(nx);
    for (int64_t v = v0; v < v1; ++v) {
      const T* view = views + v * VIEW_FIELDS;
      for (int64_t i = 0; i < ny; ++i) {
        loops.positions_2d(view, sy, sx, i, nx, fdk ? fdk[v] : T(0), positions.data(), weights.data());
        for (int64_t j = 0; j < nx; ++j) {
          T f;
          int64_t c;
          if (!linear_taps(positions[j], n_det, &c, &f)) continue;
          for (int64_t k = 0; k < batch; ++k)
            splat_bins(out + (k * n_views + v) * n_det, n_det, c, f, weights[j] * img[(k * ny + i) * nx + j], AddTo{});
        }
      }
    }
  });
}

// Rows of pixels in parallel; per row and view, the positions of the whole
// row, then the interpolation for every image of the batch.
template <typename T>
void voxel2d_adjoint_impl(const T* sino, const T* views, const T* fdk, T* out, int64_t batch, int64_t n_views,
                          int64_t n_det, int64_t ny, int64_t nx, T sy, T sx) {
  const RowLoops<T> loops = RowLoops<T>::pick();
  const int64_t padded = padded_length(nx);
  at::parallel_for(0, ny, 1, [&](int64_t i0, int64_t i1) {
    std::vector<T> positions(padded, T(-2)), weights(padded, T(0)), acc(batch * padded);
    for (int64_t i = i0; i < i1; ++i) {
      std::fill(acc.begin(), acc.end(), T(0));
      for (int64_t v = 0; v < n_views; ++v) {
        loops.positions_2d(views + v * VIEW_FIELDS, sy, sx, i, nx, fdk ? fdk[v] : T(0), positions.data(),
                           weights.data());
        for (int64_t k = 0; k < batch; ++k)
          loops.accumulate(positions.data(), weights.data(), sino + (k * n_views + v) * n_det, n_det, padded,
                           acc.data() + k * padded);
      }
      for (int64_t k = 0; k < batch; ++k) std::copy_n(acc.data() + k * padded, nx, out + (k * ny + i) * nx);
    }
  });
}

template <typename T>
void voxel3d_forward_impl(const T* vol, const T* frames_t, const T* fdk, T* out, int64_t batch, int64_t n_views,
                          int64_t n_rows, int64_t n_cols, const int64_t* n) {
  const RowLoops<T> loops = RowLoops<T>::pick();
  const int64_t vol_size = n[0] * n[1] * n[2], view_size = n_rows * n_cols;
  parallel_items(n_views, [&](int64_t v0, int64_t v1) {
    std::vector<T> cols(n[2]), rows(n[2]), weights(n[2]);
    for (int64_t v = v0; v < v1; ++v) {
      const T* f = frames_t + v * FRAME3_FIELDS;
      for (int64_t k = 0; k < n[0]; ++k)
        for (int64_t i = 0; i < n[1]; ++i) {
          loops.positions_3d(f, fdk ? fdk[v] : T(0), k, i, n[2], cols.data(), rows.data(), weights.data());
          for (int64_t j = 0; j < n[2]; ++j) {
            const DetectorTaps<T> t = detector_taps_at(cols[j], rows[j], weights[j], n_rows, n_cols);
            if (!t.hit) continue;
            for (int64_t b = 0; b < batch; ++b)
              splat_detector(out + (b * n_views + v) * view_size, n_rows, n_cols, t,
                             t.w * vol[b * vol_size + (k * n[1] + i) * n[2] + j], AddTo{});
          }
        }
    }
  });
}

// Rows of voxels (k, i) in parallel; per row and view, the detector positions
// of the whole row, then the interpolation for every volume of the batch.
template <typename T>
void voxel3d_adjoint_impl(const T* proj, const T* frames_t, const T* fdk, T* out, int64_t batch, int64_t n_views,
                          int64_t n_rows, int64_t n_cols, const int64_t* n) {
  const RowLoops<T> loops = RowLoops<T>::pick();
  const int64_t vol_size = n[0] * n[1] * n[2], view_size = n_rows * n_cols, padded = padded_length(n[2]);
  at::parallel_for(0, n[0] * n[1], 1, [&](int64_t t0, int64_t t1) {
    std::vector<T> cols(padded, T(-2)), rows(padded, T(-2)), weights(padded, T(0)), acc(batch * padded);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t k = t / n[1], i = t % n[1];
      std::fill(acc.begin(), acc.end(), T(0));
      for (int64_t v = 0; v < n_views; ++v) {
        loops.positions_3d(frames_t + v * FRAME3_FIELDS, fdk ? fdk[v] : T(0), k, i, n[2], cols.data(), rows.data(),
                           weights.data());
        for (int64_t b = 0; b < batch; ++b)
          loops.accumulate_3d(cols.data(), rows.data(), weights.data(), proj + (b * n_views + v) * view_size, n_rows,
                              n_cols, padded, acc.data() + b * padded);
      }
      for (int64_t b = 0; b < batch; ++b) std::copy_n(acc.data() + b * padded, n[2], out + b * vol_size + t * n[2]);
    }
  });
}

void check_cpu(const VoxelOperands& ops, const char* name) {
  TORCH_CHECK(ops.data.device().is_cpu(), name, ": expected CPU tensors, got ", ops.data.device());
}

}  // namespace

VoxelOperands voxel2d_forward_operands(const at::Tensor& image, const at::Tensor& views, int64_t n_det,
                                       at::ArrayRef<double> spacing, const c10::optional<at::Tensor>& fdk_weights) {
  check_data(image, 3, "image (batch, ny, nx)");
  check_views_2d(image, views, spacing);
  TORCH_CHECK(n_det >= 1, "voxel2d: n_det must be positive");
  check_joseph2d_view_values(views, image.size(1), image.size(2), "voxel2d_forward");
  VoxelOperands ops{image.contiguous(), views.contiguous()};
  ops.fdk = fdk_constants(fdk_weights, image, views.size(0));
  ops.out = at::zeros({image.size(0), views.size(0), n_det}, image.options());
  return ops;
}

VoxelOperands voxel2d_adjoint_operands(const at::Tensor& sino, const at::Tensor& views, int64_t ny, int64_t nx,
                                       at::ArrayRef<double> spacing, const c10::optional<at::Tensor>& fdk_weights) {
  check_data(sino, 3, "sinogram (batch, n_views, n_det)");
  check_views_2d(sino, views, spacing);
  TORCH_CHECK(views.size(0) == sino.size(1), "voxel2d: sinogram has ", sino.size(1), " views but the table ",
              views.size(0));
  TORCH_CHECK(ny >= 1 && nx >= 1, "voxel2d: image size must be positive");
  check_joseph2d_view_values(views, ny, nx, "voxel2d_adjoint");
  VoxelOperands ops{sino.contiguous(), views.contiguous()};
  ops.fdk = fdk_constants(fdk_weights, sino, sino.size(1));
  ops.out = at::zeros({sino.size(0), ny, nx}, sino.options());
  return ops;
}

VoxelOperands voxel3d_forward_operands(const at::Tensor& volume, const at::Tensor& frames, int64_t n_rows,
                                       int64_t n_cols, const c10::optional<at::Tensor>& fdk_weights) {
  check_joseph3d_forward_inputs(volume, frames, n_rows, n_cols);
  check_data(volume, 4, "volume (batch, nz, ny, nx)");
  // positions in the data's precision, as the CPU and CUDA loops compute them
  VoxelOperands ops{volume.contiguous(), frames.to(volume.scalar_type()).contiguous()};
  ops.fdk = fdk_constants(fdk_weights, volume, frames.size(0));
  ops.out = at::zeros({volume.size(0), frames.size(0), n_rows, n_cols}, volume.options());
  return ops;
}

VoxelOperands voxel3d_adjoint_operands(const at::Tensor& proj, const at::Tensor& frames, int64_t nz, int64_t ny,
                                       int64_t nx, const c10::optional<at::Tensor>& fdk_weights) {
  check_joseph3d_adjoint_inputs(proj, frames, nz, ny, nx);
  check_data(proj, 4, "projections (batch, n_views, n_rows, n_cols)");
  // the CPU loops address a view's detector with int32 offsets (one row of margin on both sides)
  TORCH_CHECK((proj.size(2) + 2) * proj.size(3) < (int64_t(1) << 31), "voxel3d: a detector of ", proj.size(2), " x ",
              proj.size(3), " pixels is too large (at most 2^31 pixels per view)");
  VoxelOperands ops{proj.contiguous(), frames.to(proj.scalar_type()).contiguous()};
  ops.fdk = fdk_constants(fdk_weights, proj, proj.size(1));
  ops.out = at::zeros({proj.size(0), nz, ny, nx}, proj.options());
  return ops;
}

at::Tensor voxel2d_forward_cpu(const at::Tensor& image, const at::Tensor& views, int64_t n_det,
                               at::ArrayRef<double> spacing, const c10::optional<at::Tensor>& fdk_weights) {
  VoxelOperands ops = voxel2d_forward_operands(image, views, n_det, spacing, fdk_weights);
  check_cpu(ops, "voxel2d_forward");
  if (ops.out.numel() == 0 || ops.data.numel() == 0) return ops.out;
  const int64_t batch = ops.data.size(0), ny = ops.data.size(1), nx = ops.data.size(2);
  AT_DISPATCH_FLOATING_TYPES(ops.data.scalar_type(), "voxel2d_forward_cpu", [&] {
    voxel2d_forward_impl<scalar_t>(ops.data.data_ptr<scalar_t>(), ops.table.data_ptr<scalar_t>(),
                                   pointer_or_null<scalar_t>(ops.fdk), ops.out.data_ptr<scalar_t>(), batch,
                                   ops.table.size(0), n_det, ny, nx, scalar_t(spacing[0]), scalar_t(spacing[1]));
  });
  return ops.out;
}

at::Tensor voxel2d_adjoint_cpu(const at::Tensor& sino, const at::Tensor& views, int64_t ny, int64_t nx,
                               at::ArrayRef<double> spacing, const c10::optional<at::Tensor>& fdk_weights) {
  VoxelOperands ops = voxel2d_adjoint_operands(sino, views, ny, nx, spacing, fdk_weights);
  check_cpu(ops, "voxel2d_adjoint");
  if (ops.out.numel() == 0 || ops.data.numel() == 0) return ops.out;
  const int64_t batch = ops.data.size(0), n_views = ops.data.size(1), n_det = ops.data.size(2);
  AT_DISPATCH_FLOATING_TYPES(ops.data.scalar_type(), "voxel2d_adjoint_cpu", [&] {
    voxel2d_adjoint_impl<scalar_t>(ops.data.data_ptr<scalar_t>(), ops.table.data_ptr<scalar_t>(),
                                   pointer_or_null<scalar_t>(ops.fdk), ops.out.data_ptr<scalar_t>(), batch, n_views,
                                   n_det, ny, nx, scalar_t(spacing[0]), scalar_t(spacing[1]));
  });
  return ops.out;
}

at::Tensor voxel3d_forward_cpu(const at::Tensor& volume, const at::Tensor& frames, int64_t n_rows, int64_t n_cols,
                               const c10::optional<at::Tensor>& fdk_weights) {
  VoxelOperands ops = voxel3d_forward_operands(volume, frames, n_rows, n_cols, fdk_weights);
  check_cpu(ops, "voxel3d_forward");
  if (ops.out.numel() == 0 || ops.data.numel() == 0) return ops.out;
  const int64_t n[3] = {ops.data.size(1), ops.data.size(2), ops.data.size(3)};
  AT_DISPATCH_FLOATING_TYPES(ops.data.scalar_type(), "voxel3d_forward_cpu", [&] {
    voxel3d_forward_impl<scalar_t>(ops.data.data_ptr<scalar_t>(), ops.table.data_ptr<scalar_t>(),
                                   pointer_or_null<scalar_t>(ops.fdk), ops.out.data_ptr<scalar_t>(), ops.data.size(0),
                                   ops.table.size(0), n_rows, n_cols, n);
  });
  return ops.out;
}

at::Tensor voxel3d_adjoint_cpu(const at::Tensor& proj, const at::Tensor& frames, int64_t nz, int64_t ny, int64_t nx,
                               const c10::optional<at::Tensor>& fdk_weights) {
  VoxelOperands ops = voxel3d_adjoint_operands(proj, frames, nz, ny, nx, fdk_weights);
  check_cpu(ops, "voxel3d_adjoint");
  if (ops.out.numel() == 0 || ops.data.numel() == 0) return ops.out;
  const int64_t n[3] = {nz, ny, nx};
  AT_DISPATCH_FLOATING_TYPES(ops.data.scalar_type(), "voxel3d_adjoint_cpu", [&] {
    voxel3d_adjoint_impl<scalar_t>(ops.data.data_ptr<scalar_t>(), ops.table.data_ptr<scalar_t>(),
                                   pointer_or_null<scalar_t>(ops.fdk), ops.out.data_ptr<scalar_t>(), ops.data.size(0),
                                   ops.data.size(1), ops.data.size(2), ops.data.size(3), n);
  });
  return ops.out;
}

}  // namespace known_ops
