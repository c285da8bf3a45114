// Launchers of the 3D Joseph CUDA kernels.  Plain pointers and a stream, no
// torch types, so the .cu file compiles with nvcc alone (docs/design.md, section 1).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace known_ops {

// volume (batch, nz, ny, nx), frames (n_views, FRAME3_FIELDS) float64 on the device
//   -> out (batch, n_views, n_rows, n_cols).
// Views in chunks of `chunk_views`, with the workspace of one chunk as for
// the adjoint below (`rays`, `majors`): the chunk's ray table is written, then
// each ray is marched through every volume of the batch.  `swapped` (or
// null): the same volumes with x and y exchanged, (batch, nz, nx, ny), read by
// x-major rays for coalesced loads.
template <typename T>
cudaError_t joseph3d_forward_cuda(const T* volume, const T* swapped, const double* frames, T* out, int64_t batch,
                                  int64_t n_views, int64_t n_rows, int64_t n_cols, int64_t nz, int64_t ny, int64_t nx,
                                  int64_t chunk_views, T* rays, int* majors, cudaStream_t stream);

// proj (batch, n_views, n_rows, n_cols), frames (n_views, FRAME3_FIELDS) float64, frames_t: the same
// frames in T -> out (batch, nz, ny, nx), the pixel-driven (gather) adjoint.
// The views are processed in chunks of `chunk_views`, in order; the caller
// provides the workspace of one chunk: `rays` (chunk_views * n_rows * n_cols *
// RAY3_FIELDS values of T) and `majors` (chunk_views ints).  Every voxel sums
// the views in the order 0, 1, ..., n_views - 1 whatever the chunk size, so
// the result does not depend on it (bitwise) and needs no atomics.
template <typename T>
cudaError_t joseph3d_adjoint_cuda(const T* proj, const double* frames, const T* frames_t, T* out, int64_t batch,
                                  int64_t n_views, int64_t n_rows, int64_t n_cols, int64_t nz, int64_t ny,
                                  int64_t nx, int64_t chunk_views, T* rays, int* majors, cudaStream_t stream);

}  // namespace known_ops
