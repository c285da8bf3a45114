// Launchers of the voxel-driven CUDA kernels (model="voxel").  Plain pointers
// and a stream, no torch types, so the .cu file compiles with nvcc alone
// (docs/design.md, section 1).  All pointers are on the device; `fdk` (n_views
// values) is null for the line-integral weighting (voxel.h).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace known_ops {

// image (batch, ny, nx), views (n_views, VIEW_FIELDS) -> out (batch, n_views, n_det), which must be
// zero on entry (the voxels are splatted onto it with atomic adds).
template <typename T>
cudaError_t voxel2d_forward_cuda(const T* image, const T* views, const T* fdk, T* out, int64_t batch,
                                 int64_t n_views, int64_t n_det, int64_t ny, int64_t nx, T sy, T sx,
                                 cudaStream_t stream);

// sino (batch, n_views, n_det), views (n_views, VIEW_FIELDS) -> out (batch, ny, nx), every element written.
template <typename T>
cudaError_t voxel2d_adjoint_cuda(const T* sino, const T* views, const T* fdk, T* out, int64_t batch,
                                 int64_t n_views, int64_t n_det, int64_t ny, int64_t nx, T sy, T sx,
                                 cudaStream_t stream);

// volume (batch, nz, ny, nx), frames_t (n_views, FRAME3_FIELDS) in T -> out (batch, n_views, n_rows,
// n_cols), zero on entry (atomic adds).
template <typename T>
cudaError_t voxel3d_forward_cuda(const T* volume, const T* frames_t, const T* fdk, T* out, int64_t batch,
                                 int64_t n_views, int64_t n_rows, int64_t n_cols, int64_t nz, int64_t ny, int64_t nx,
                                 cudaStream_t stream);

// proj (batch, n_views, n_rows, n_cols), frames_t (n_views, FRAME3_FIELDS) in T -> out (batch, nz, ny,
// nx), every element written.
template <typename T>
cudaError_t voxel3d_adjoint_cuda(const T* proj, const T* frames_t, const T* fdk, T* out, int64_t batch,
                                 int64_t n_views, int64_t n_rows, int64_t n_cols, int64_t nz, int64_t ny, int64_t nx,
                                 cudaStream_t stream);

}  // namespace known_ops
