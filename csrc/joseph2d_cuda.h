// Launchers of the 2D Joseph CUDA kernels.  Plain pointers and a stream, no
// torch types, so the .cu file compiles with nvcc alone (docs/design.md, section 1).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace known_ops {

// image (batch, ny, nx), rays (n_views, n_det, RAY_FIELDS) -> out (batch, n_views, n_det)
template <typename T>
cudaError_t joseph2d_forward_cuda(const T* image, const T* rays, T* out, int64_t batch, int64_t n_views,
                                  int64_t n_det, int64_t ny, int64_t nx, cudaStream_t stream);

// sino (batch, n_views, n_det), rays, views (n_views, VIEW_FIELDS) -> out (batch, ny, nx)
template <typename T>
cudaError_t joseph2d_adjoint_cuda(const T* sino, const T* rays, const T* views, T* out, int64_t batch,
                                  int64_t n_views, int64_t n_det, int64_t ny, int64_t nx, cudaStream_t stream);

}  // namespace known_ops
