// Entry points of the voxel-driven projector pair (model="voxel"); see voxel.h.
#pragma once

#include <ATen/ATen.h>

namespace known_ops {

// 2D: views (n_views, VIEW_FIELDS) in the data's dtype (the Joseph view table), spacing [sy, sx].
// fdk_weights (optional, (n_views,)): per-view constants of the FDK weighting (voxel.h); none: the
// line-integral weighting.
at::Tensor voxel2d_forward_cpu(const at::Tensor& image, const at::Tensor& views, int64_t n_det,
                               at::ArrayRef<double> spacing, const c10::optional<at::Tensor>& fdk_weights);
at::Tensor voxel2d_adjoint_cpu(const at::Tensor& sino, const at::Tensor& views, int64_t ny, int64_t nx,
                               at::ArrayRef<double> spacing, const c10::optional<at::Tensor>& fdk_weights);
// 3D: frames (n_views, FRAME3_FIELDS) float64 (the Joseph frames).
at::Tensor voxel3d_forward_cpu(const at::Tensor& volume, const at::Tensor& frames, int64_t n_rows, int64_t n_cols,
                               const c10::optional<at::Tensor>& fdk_weights);
at::Tensor voxel3d_adjoint_cpu(const at::Tensor& proj, const at::Tensor& frames, int64_t nz, int64_t ny, int64_t nx,
                               const c10::optional<at::Tensor>& fdk_weights);

// The operands of one voxel op, checked and made contiguous, shared by the CPU
// and CUDA entry points: `data` the input (batch first), `table` the 2D view
// table or the 3D frames converted to the data's dtype, `fdk` the FDK
// constants in that dtype (undefined: line weighting) and `out` the output,
// zero-filled; all on the data's device.
struct VoxelOperands {
  at::Tensor data, table, fdk, out;
};

// The data of an optional tensor (the FDK constants), or null when it is undefined.
template <typename T>
const T* pointer_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}
VoxelOperands voxel2d_forward_operands(const at::Tensor& image, const at::Tensor& views, int64_t n_det,
                                       at::ArrayRef<double> spacing, const c10::optional<at::Tensor>& fdk_weights);
VoxelOperands voxel2d_adjoint_operands(const at::Tensor& sino, const at::Tensor& views, int64_t ny, int64_t nx,
                                       at::ArrayRef<double> spacing, const c10::optional<at::Tensor>& fdk_weights);
VoxelOperands voxel3d_forward_operands(const at::Tensor& volume, const at::Tensor& frames, int64_t n_rows,
                                       int64_t n_cols, const c10::optional<at::Tensor>& fdk_weights);
VoxelOperands voxel3d_adjoint_operands(const at::Tensor& proj, const at::Tensor& frames, int64_t nz, int64_t ny,
                                       int64_t nx, const c10::optional<at::Tensor>& fdk_weights);

}  // namespace known_ops
