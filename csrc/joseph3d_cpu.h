// Declarations of the 3D Joseph operators' CPU entry points and input checks
// (registered with the dispatcher in ops.cpp).
#pragma once

#include <ATen/ATen.h>

namespace known_ops {

// Per-view frames (n_views, FRAME3_FIELDS), float64 on the CPU, from the
// 12-number vectors (n_views, 12) of a 3D geometry on the grid
// (nz, ny, nx) with spacing and offset [sz, sy, sx, oz, oy, ox].
at::Tensor joseph3d_frames(const at::Tensor& vectors, int64_t kind, int64_t n_rows, int64_t n_cols, int64_t nz,
                           int64_t ny, int64_t nx, at::ArrayRef<double> spacing_offset);

at::Tensor joseph3d_forward_cpu(const at::Tensor& volume, const at::Tensor& frames, int64_t n_rows, int64_t n_cols);
at::Tensor joseph3d_adjoint_cpu(const at::Tensor& proj, const at::Tensor& frames, int64_t nz, int64_t ny, int64_t nx);
at::Tensor joseph3d_adjoint_gather_cpu(const at::Tensor& proj, const at::Tensor& frames, int64_t nz, int64_t ny,
                                       int64_t nx);

// Shared shape/dtype/device checks (also used by the CUDA binding).
void check_joseph3d_forward_inputs(const at::Tensor& volume, const at::Tensor& frames, int64_t n_rows,
                                   int64_t n_cols);
void check_joseph3d_adjoint_inputs(const at::Tensor& proj, const at::Tensor& frames, int64_t nz, int64_t ny,
                                   int64_t nx);

}  // namespace known_ops
