// Declarations of the 2D Joseph operators' CPU entry points and input checks
// (registered with the dispatcher in ops.cpp).
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace known_ops {

// Ray table (n_views, n_det, RAY_FIELDS) and view table (n_views, VIEW_FIELDS),
// float64 on the CPU, from ASTRA-layout vectors (n_views, 6).
std::tuple<at::Tensor, at::Tensor> joseph2d_tables(const at::Tensor& vectors, int64_t kind, int64_t n_det,
                                                   int64_t ny, int64_t nx, at::ArrayRef<double> spacing_offset);

// Origin and direction (world, mm) of every ray: (n_views, n_det, 4) = (ox, oy, dx, dy).
at::Tensor geometry2d_rays(const at::Tensor& vectors, int64_t kind, int64_t n_det);

at::Tensor joseph2d_forward_cpu(const at::Tensor& image, const at::Tensor& rays, const at::Tensor& views);
at::Tensor joseph2d_adjoint_cpu(const at::Tensor& sino, const at::Tensor& rays, const at::Tensor& views, int64_t ny,
                                int64_t nx);
at::Tensor joseph2d_adjoint_gather_cpu(const at::Tensor& sino, const at::Tensor& rays, const at::Tensor& views,
                                       int64_t ny, int64_t nx);

// Shared shape/dtype/device checks (also used by the CUDA binding).
void check_joseph2d_forward_inputs(const at::Tensor& image, const at::Tensor& rays, const at::Tensor& views);
void check_joseph2d_adjoint_inputs(const at::Tensor& sino, const at::Tensor& rays, const at::Tensor& views, int64_t ny,
                                   int64_t nx);

// The values of a view table (n_views, VIEW_FIELDS) that an op reads (the gather adjoint, the
// voxel-driven pair): finite, with the grown ny x nx image on one side of the source
// (view_map_problem in joseph2d.h).  Checked for CPU tensors only (no device synchronisation).
void check_joseph2d_view_values(const at::Tensor& views, int64_t ny, int64_t nx, const char* op);

}  // namespace known_ops
