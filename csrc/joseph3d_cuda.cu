// CUDA kernels of the 3D Joseph projector pair, built from the same header
// math as the CPU loops (joseph3d.h): make_ray3d_as, march3d, gather_view3d.
//
// Forward: per chunk of views, one kernel writes the ray table (the float64
// set-up, make_ray3d_as) and one marches every ray, one thread per detector
// pixel: the 32 threads of a warp take 32 consecutive pixels of a detector
// row (their rays are close, so are their samples), for every volume of the
// batch.  x-major rays read a copy of the volume with x and y exchanged, so
// that a warp's loads are coalesced for every view direction.
//
// Adjoint: pixel-driven (gather), one thread per voxel, x fastest: the exact
// transpose of the forward, without atomics on the volume, hence
// deterministic.  The views are processed in chunks whose ray table fits the
// caller's workspace; per chunk one kernel writes the table (make_ray3d_as)
// and the set of major axes of each view, and one kernel gathers.  A voxel's
// accumulator starts from the value left by the previous chunk, so the views
// are summed in the order 0, 1, ..., n_views - 1 whatever the chunk size, the
// same order as joseph3d_adjoint_gather on the CPU.
#include "joseph3d_cuda.h"

#include "joseph3d.h"

namespace known_ops {
namespace {

constexpr int kThreads = 256;
constexpr int kViewGroup = 32;    // frames the gather stages in shared memory at a time
constexpr int64_t kMaxGridX = 2147483647, kMaxGridYZ = 65535;

__host__ __device__ inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
int64_t blocks_for(int64_t n, int64_t per_block, int64_t limit) {
  return min64((n + per_block - 1) / per_block, limit);
}

// Forward of views [v0, v0 + n_chunk) from their ray table (written by
// ray_table3d_kernel): one thread per detector pixel, so the kernel holds
// only the march's registers (the float64 ray set-up runs in the table
// kernel).  `swapped` (may be null): the same volumes stored with x and y
// exchanged, (batch, nz, nx, ny); x-major rays read it, so that the 32 rays of
// a warp, which then differ mostly in y, read neighbouring addresses.  The
// positions and weights are unchanged (only the strides differ).  I: index
// type of offsets within one volume.
template <typename T, typename I>
__global__ void __launch_bounds__(kThreads)
    forward3d_kernel(const T* __restrict__ volume, const T* __restrict__ swapped, const T* __restrict__ rays,
                     T* __restrict__ out, int64_t batch, int64_t n_views, int64_t v0, int64_t n_chunk, int64_t n_rows,
                     int64_t n_cols, int64_t nz, int64_t ny, int64_t nx) {
  const int64_t n[3] = {nz, ny, nx};
  const int64_t stride[3] = {ny * nx, nx, 1};
  const int64_t stride_swapped[3] = {ny * nx, 1, ny};
  const int64_t vol_size = nz * ny * nx, view_size = n_rows * n_cols, proj_size = n_views * view_size;
  const int64_t n_rays = n_chunk * view_size;
  for (int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; r < n_rays; r += int64_t(gridDim.x) * blockDim.x) {
    T ray[RAY3_FIELDS];
#pragma unroll
    for (int q = 0; q < RAY3_FIELDS; ++q) ray[q] = __ldg(rays + r * RAY3_FIELDS + q);
    const int major = int(ray[ray3::kMajor]);
    const bool use_swapped = swapped != nullptr && major == 2;
    // (two calls rather than a pointer select: keeps the stride arrays in registers)
    const Axes3<I> ax = use_swapped ? axes_of<I>(major, n, stride_swapped) : axes_of<I>(major, n, stride);
    const T* src = use_swapped ? swapped : volume;
    I m0, m1;
    march_range(ray, n[major], &m0, &m1);
    T* o = out + v0 * view_size + r;
    for (int64_t b = 0; b < batch; ++b)
      o[b * proj_size] = m0 <= m1 ? march3d(src + b * vol_size, ax, ray, m0, m1) : T(0);
  }
}

// Ray table of views [v0, v0 + n_chunk) and, per view, the set of major axes
// (bit 1 << major) of its rays; `majors` must be zero on entry.  A view whose
// frame cannot be used for this (nz, ny, nx) volume and detector (NaN, an
// unknown kind, an overflowing set-up, another grid: frame3d_problem, which
// the CPU bindings raise on) gets empty rays, so that its march reads nothing.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    ray_table3d_kernel(const double* __restrict__ frames, T* __restrict__ rays, int* __restrict__ majors, int64_t v0,
                       int64_t n_chunk, int64_t n_rows, int64_t n_cols, int64_t nz, int64_t ny, int64_t nx) {
  __shared__ double frame[FRAME3_FIELDS];
  __shared__ int block_majors;
  __shared__ bool frame_ok;
  const int64_t view_size = n_rows * n_cols;
  for (int64_t c = blockIdx.y; c < n_chunk; c += gridDim.y) {
    __syncthreads();
    if (threadIdx.x < FRAME3_FIELDS) frame[threadIdx.x] = __ldg(frames + (v0 + c) * FRAME3_FIELDS + threadIdx.x);
    if (threadIdx.x == 0) block_majors = 0;
    __syncthreads();
    if (threadIdx.x == 0) frame_ok = frame3d_problem<T>(frame, nz, ny, nx, n_rows, n_cols) == nullptr;
    __syncthreads();
    int mine = 0;
    for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < view_size;
         p += int64_t(gridDim.x) * blockDim.x) {
      T ray[RAY3_FIELDS];
      if (frame_ok) {
        make_ray3d_as<T>(frame, p / n_cols, p % n_cols, ray);
      } else {
        double empty[RAY3_FIELDS];
        empty_ray3d(empty);
#pragma unroll
        for (int q = 0; q < RAY3_FIELDS; ++q) ray[q] = T(empty[q]);
      }
      T* dst = rays + (c * view_size + p) * RAY3_FIELDS;
#pragma unroll
      for (int q = 0; q < RAY3_FIELDS; ++q) dst[q] = ray[q];
      mine |= 1 << int(ray[ray3::kMajor]);
    }
    if (mine) atomicOr(&block_majors, mine);
    __syncthreads();
    if (threadIdx.x == 0 && block_majors) atomicOr(majors + c, block_majors);
  }
}

// Gather of views [v0, v0 + n_chunk) into every voxel; the accumulator starts
// from zero for the first chunk (v0 == 0) and from the output otherwise.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    gather3d_kernel(const T* __restrict__ proj, const T* __restrict__ frames_t, const T* __restrict__ rays,
                    const int* __restrict__ majors, T* __restrict__ out, int64_t batch, int64_t n_views, int64_t v0,
                    int64_t n_chunk, int64_t n_rows, int64_t n_cols, int64_t nz, int64_t ny, int64_t nx) {
  __shared__ T frame[kViewGroup * FRAME3_FIELDS];
  __shared__ int view_majors[kViewGroup];
  const int64_t n_vox = nz * ny * nx, view_size = n_rows * n_cols;
  for (int64_t b = blockIdx.y; b < batch; b += gridDim.y) {
    for (int64_t base = int64_t(blockIdx.x) * blockDim.x; base < n_vox; base += int64_t(gridDim.x) * blockDim.x) {
      const int64_t t = base + threadIdx.x;
      const bool valid = t < n_vox;
      const int64_t j = t % nx, i = (t / nx) % ny, k = t / (nx * ny);
      T* o = out + b * n_vox + t;
      T acc = (v0 == 0 || !valid) ? T(0) : *o;
      for (int64_t g0 = 0; g0 < n_chunk; g0 += kViewGroup) {
        const int group = int(min64(kViewGroup, n_chunk - g0));
        __syncthreads();  // every thread is done with the previous group
        for (int q = threadIdx.x; q < group * FRAME3_FIELDS; q += blockDim.x)
          frame[q] = __ldg(frames_t + (v0 + g0) * FRAME3_FIELDS + q);
        if (threadIdx.x < group) view_majors[threadIdx.x] = __ldg(majors + g0 + threadIdx.x);
        __syncthreads();
        if (!valid) continue;
        for (int g = 0; g < group; ++g) {
          const int64_t c = g0 + g;
          acc += gather_view3d(frame + g * FRAME3_FIELDS, rays + c * view_size * RAY3_FIELDS,
                               proj + (b * n_views + v0 + c) * view_size, n_rows, n_cols, view_majors[g], k, i, j);
        }
      }
      if (valid) *o = acc;
    }
  }
}

// Writes the ray table of views [v0, v0 + n_chunk) and their sets of major
// axes (the first step of every chunk, forward and adjoint alike).
template <typename T>
cudaError_t write_ray_table(const double* frames, T* rays, int* majors, int64_t v0, int64_t n_chunk, int64_t n_rows,
                            int64_t n_cols, int64_t nz, int64_t ny, int64_t nx, cudaStream_t stream) {
  const cudaError_t err = cudaMemsetAsync(majors, 0, sizeof(int) * n_chunk, stream);
  if (err != cudaSuccess) return err;
  const dim3 grid(unsigned(blocks_for(n_rows * n_cols, kThreads, kMaxGridX)), unsigned(min64(n_chunk, kMaxGridYZ)));
  ray_table3d_kernel<T><<<grid, kThreads, 0, stream>>>(frames, rays, majors, v0, n_chunk, n_rows, n_cols, nz, ny, nx);
  return cudaGetLastError();
}

}  // namespace

template <typename T>
cudaError_t joseph3d_forward_cuda(const T* volume, const T* swapped, const double* frames, T* out, int64_t batch,
                                  int64_t n_views, int64_t n_rows, int64_t n_cols, int64_t nz, int64_t ny, int64_t nx,
                                  int64_t chunk_views, T* rays, int* majors, cudaStream_t stream) {
  const int64_t view_size = n_rows * n_cols;
  if (batch == 0 || n_views == 0 || view_size == 0) return cudaSuccess;
  if (chunk_views < 1) return cudaErrorInvalidValue;
  // 32-bit offsets within one volume when they fit (faster index arithmetic
  // and conversions on the GPU; the same values as 64-bit ones).
  const bool small = nz * ny * nx < (int64_t(1) << 31);
  for (int64_t v0 = 0; v0 < n_views; v0 += chunk_views) {
    const int64_t n_chunk = min64(chunk_views, n_views - v0);
    cudaError_t err = write_ray_table(frames, rays, majors, v0, n_chunk, n_rows, n_cols, nz, ny, nx, stream);
    if (err != cudaSuccess) return err;
    const unsigned grid = unsigned(blocks_for(n_chunk * view_size, kThreads, kMaxGridX));
    if (small)
      forward3d_kernel<T, int32_t><<<grid, kThreads, 0, stream>>>(volume, swapped, rays, out, batch, n_views, v0,
                                                                  n_chunk, n_rows, n_cols, nz, ny, nx);
    else
      forward3d_kernel<T, int64_t><<<grid, kThreads, 0, stream>>>(volume, swapped, rays, out, batch, n_views, v0,
                                                                  n_chunk, n_rows, n_cols, nz, ny, nx);
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

template <typename T>
cudaError_t joseph3d_adjoint_cuda(const T* proj, const double* frames, const T* frames_t, T* out, int64_t batch,
                                  int64_t n_views, int64_t n_rows, int64_t n_cols, int64_t nz, int64_t ny,
                                  int64_t nx, int64_t chunk_views, T* rays, int* majors, cudaStream_t stream) {
  const int64_t n_vox = nz * ny * nx, view_size = n_rows * n_cols;
  if (batch == 0 || n_vox == 0) return cudaSuccess;
  if (n_views == 0 || view_size == 0) return cudaMemsetAsync(out, 0, sizeof(T) * batch * n_vox, stream);
  if (chunk_views < 1) return cudaErrorInvalidValue;
  for (int64_t v0 = 0; v0 < n_views; v0 += chunk_views) {
    const int64_t n_chunk = min64(chunk_views, n_views - v0);
    cudaError_t err = write_ray_table(frames, rays, majors, v0, n_chunk, n_rows, n_cols, nz, ny, nx, stream);
    if (err != cudaSuccess) return err;
    const dim3 gather_grid(unsigned(blocks_for(n_vox, kThreads, kMaxGridX)), unsigned(min64(batch, kMaxGridYZ)));
    gather3d_kernel<T><<<gather_grid, kThreads, 0, stream>>>(proj, frames_t, rays, majors, out, batch, n_views,
                                                                 v0, n_chunk, n_rows, n_cols, nz, ny, nx);
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

template cudaError_t joseph3d_forward_cuda<float>(const float*, const float*, const double*, float*, int64_t, int64_t,
                                                  int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float*, int*,
                                                  cudaStream_t);
template cudaError_t joseph3d_forward_cuda<double>(const double*, const double*, const double*, double*, int64_t,
                                                   int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                                                   double*, int*, cudaStream_t);
template cudaError_t joseph3d_adjoint_cuda<float>(const float*, const double*, const float*, float*, int64_t, int64_t,
                                                  int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float*, int*,
                                                  cudaStream_t);
template cudaError_t joseph3d_adjoint_cuda<double>(const double*, const double*, const double*, double*, int64_t,
                                                   int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                                                   double*, int*, cudaStream_t);

}  // namespace known_ops
