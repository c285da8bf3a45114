// CUDA kernels of the voxel-driven projector pair (model="voxel"), built from
// the same per-voxel functions as the CPU loops (voxel.h): voxel2d_taps,
// detector_taps, interpolate_* and splat_*.
//
// Every kernel runs one thread per voxel, x fastest, and loops over the
// views; a block stages the view tables (2D) or frames (3D) of kViewGroup
// views at a time in shared memory.
//
// Back-projection (adjoint): each thread sums its voxel's interpolated
// detector values over the views in the order 0, 1, ..., n_views - 1, as the
// CPU loop does, for kBatchTile volumes of the batch at a time (the taps are
// computed once per view for the tile): no atomics, deterministic.
// Forward: the transpose, each voxel splatted onto the detector with atomic
// adds (a gather over the voxels that project near a detector pixel would be
// deterministic but needs a search per pixel); the sum's order, hence its last
// bits, may change from run to run.
#include "voxel_cuda.h"

#include "voxel.h"

namespace known_ops {
namespace {

constexpr int kThreads = 256;
constexpr int kViewGroup = 32;  // views whose tables a block stages in shared memory at a time
constexpr int kBatchTile = 4;   // volumes of a batch that the back-projection serves per pass
constexpr int64_t kMaxBlocks = 2147483647;

int64_t blocks_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return blocks < kMaxBlocks ? blocks : kMaxBlocks;
}

__device__ __forceinline__ void atomic_add(float* p, float value) { atomicAdd(p, value); }
__device__ __forceinline__ void atomic_add(double* p, double value) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 600
  atomicAdd(p, value);
#else  // no native float64 atomicAdd before sm_60: compare-and-swap loop
  auto* address = reinterpret_cast<unsigned long long*>(p);
  unsigned long long old = *address, assumed;
  do {
    assumed = old;
    old = atomicCAS(address, assumed, __double_as_longlong(value + __longlong_as_double(assumed)));
  } while (assumed != old);
#endif
}

// The splat's accumulation on the GPU: many voxels hit the same bin.
struct AtomicAddTo {
  template <typename T>
  __device__ void operator()(T* p, T value) const {
    atomic_add(p, value);
  }
};

// Calls visit(t, active) for every voxel index t of [0, n_voxels): one thread
// per voxel, striding over whole blocks, so that every thread of a block makes
// the same calls (active is false for the padding threads of the last block)
// and may reach the barriers of for_each_view.
template <typename Visit>
__device__ __forceinline__ void for_each_voxel(int64_t n_voxels, const Visit& visit) {
  for (int64_t base = int64_t(blockIdx.x) * blockDim.x; base < n_voxels; base += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = base + threadIdx.x;
    visit(t, t < n_voxels);
  }
}

// Calls visit(v, table, fdk_v) for the views v = 0, 1, ..., n_views - 1 in
// order, with view v's table (FIELDS values of `tables`) and FDK constant (0
// when `fdk` is null), staged in shared memory kViewGroup views at a time.
// Every thread of the block must call it (barriers); inactive ones visit nothing.
template <int FIELDS, typename T, typename Visit>
__device__ __forceinline__ void for_each_view(const T* __restrict__ tables, const T* __restrict__ fdk,
                                              int64_t n_views, bool active, const Visit& visit) {
  __shared__ T table[kViewGroup * FIELDS];
  __shared__ T group_fdk[kViewGroup];
  for (int64_t first = 0; first < n_views; first += kViewGroup) {
    const int count = n_views - first < kViewGroup ? int(n_views - first) : kViewGroup;
    __syncthreads();  // the previous group is no longer read
    for (int q = threadIdx.x; q < count * FIELDS; q += blockDim.x) table[q] = tables[first * FIELDS + q];
    if (int(threadIdx.x) < count) group_fdk[threadIdx.x] = fdk != nullptr ? fdk[first + threadIdx.x] : T(0);
    __syncthreads();
    if (!active) continue;
    for (int v = 0; v < count; ++v) visit(first + v, table + v * FIELDS, group_fdk[v]);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    voxel2d_forward_kernel(const T* __restrict__ image, const T* __restrict__ views, const T* __restrict__ fdk,
                           T* __restrict__ out, int64_t batch, int64_t n_views, int64_t n_det, int64_t ny, int64_t nx,
                           T sy, T sx) {
  const int64_t n_pixels = ny * nx;
  for_each_voxel(n_pixels, [&](int64_t t, bool active) {
    const int64_t i = t / nx, j = t % nx;
    for_each_view<VIEW_FIELDS>(views, fdk, n_views, active, [&](int64_t v, const T* view, T fdk_v) {
      T w, f;
      int64_t c;
      if (!voxel2d_taps(view, sy, sx, i, j, fdk_v, n_det, &c, &f, &w)) return;
      for (int64_t b = 0; b < batch; ++b)
        splat_bins(out + (b * n_views + v) * n_det, n_det, c, f, w * __ldg(image + b * n_pixels + t), AtomicAddTo{});
    });
  });
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    voxel2d_adjoint_kernel(const T* __restrict__ sino, const T* __restrict__ views, const T* __restrict__ fdk,
                           T* __restrict__ out, int64_t batch, int64_t n_views, int64_t n_det, int64_t ny, int64_t nx,
                           T sy, T sx) {
  const int64_t n_pixels = ny * nx;
  for_each_voxel(n_pixels, [&](int64_t t, bool active) {
    const int64_t i = t / nx, j = t % nx;
    for (int64_t b0 = 0; b0 < batch; b0 += kBatchTile) {
      T acc[kBatchTile] = {};
      for_each_view<VIEW_FIELDS>(views, fdk, n_views, active, [&](int64_t v, const T* view, T fdk_v) {
        T w, f;
        int64_t c;
        if (!voxel2d_taps(view, sy, sx, i, j, fdk_v, n_det, &c, &f, &w)) return;
#pragma unroll
        for (int q = 0; q < kBatchTile; ++q)
          if (b0 + q < batch) acc[q] += w * interpolate_bins(sino + ((b0 + q) * n_views + v) * n_det, n_det, c, f);
      });
#pragma unroll
      for (int q = 0; q < kBatchTile; ++q)
        if (active && b0 + q < batch) out[(b0 + q) * n_pixels + t] = acc[q];
    }
  });
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    voxel3d_forward_kernel(const T* __restrict__ volume, const T* __restrict__ frames_t, const T* __restrict__ fdk,
                           T* __restrict__ out, int64_t batch, int64_t n_views, int64_t n_rows, int64_t n_cols,
                           int64_t nz, int64_t ny, int64_t nx) {
  const int64_t vol_size = nz * ny * nx, view_size = n_rows * n_cols;
  for_each_voxel(vol_size, [&](int64_t t, bool active) {
    const int64_t j = t % nx, i = (t / nx) % ny, k = t / (nx * ny);
    for_each_view<FRAME3_FIELDS>(frames_t, fdk, n_views, active, [&](int64_t v, const T* frame, T fdk_v) {
      const DetectorTaps<T> d = detector_taps(frame, fdk_v, k, i, j, n_rows, n_cols);
      if (!d.hit) return;
      for (int64_t b = 0; b < batch; ++b)
        splat_detector(out + (b * n_views + v) * view_size, n_rows, n_cols, d, d.w * __ldg(volume + b * vol_size + t),
                       AtomicAddTo{});
    });
  });
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    voxel3d_adjoint_kernel(const T* __restrict__ proj, const T* __restrict__ frames_t, const T* __restrict__ fdk,
                           T* __restrict__ out, int64_t batch, int64_t n_views, int64_t n_rows, int64_t n_cols,
                           int64_t nz, int64_t ny, int64_t nx) {
  const int64_t vol_size = nz * ny * nx, view_size = n_rows * n_cols;
  for_each_voxel(vol_size, [&](int64_t t, bool active) {
    const int64_t j = t % nx, i = (t / nx) % ny, k = t / (nx * ny);
    for (int64_t b0 = 0; b0 < batch; b0 += kBatchTile) {
      T acc[kBatchTile] = {};
      for_each_view<FRAME3_FIELDS>(frames_t, fdk, n_views, active, [&](int64_t v, const T* frame, T fdk_v) {
        const DetectorTaps<T> d = detector_taps(frame, fdk_v, k, i, j, n_rows, n_cols);
        if (!d.hit) return;
#pragma unroll
        for (int q = 0; q < kBatchTile; ++q)
          if (b0 + q < batch)
            acc[q] += d.w * interpolate_detector(proj + ((b0 + q) * n_views + v) * view_size, n_rows, n_cols, d);
      });
#pragma unroll
      for (int q = 0; q < kBatchTile; ++q)
        if (active && b0 + q < batch) out[(b0 + q) * vol_size + t] = acc[q];
    }
  });
}

}  // namespace

template <typename T>
cudaError_t voxel2d_forward_cuda(const T* image, const T* views, const T* fdk, T* out, int64_t batch,
                                 int64_t n_views, int64_t n_det, int64_t ny, int64_t nx, T sy, T sx,
                                 cudaStream_t stream) {
  voxel2d_forward_kernel<T><<<blocks_for(ny * nx), kThreads, 0, stream>>>(image, views, fdk, out, batch, n_views,
                                                                          n_det, ny, nx, sy, sx);
  return cudaGetLastError();
}

template <typename T>
cudaError_t voxel2d_adjoint_cuda(const T* sino, const T* views, const T* fdk, T* out, int64_t batch,
                                 int64_t n_views, int64_t n_det, int64_t ny, int64_t nx, T sy, T sx,
                                 cudaStream_t stream) {
  voxel2d_adjoint_kernel<T><<<blocks_for(ny * nx), kThreads, 0, stream>>>(sino, views, fdk, out, batch, n_views,
                                                                          n_det, ny, nx, sy, sx);
  return cudaGetLastError();
}

template <typename T>
cudaError_t voxel3d_forward_cuda(const T* volume, const T* frames_t, const T* fdk, T* out, int64_t batch,
                                 int64_t n_views, int64_t n_rows, int64_t n_cols, int64_t nz, int64_t ny, int64_t nx,
                                 cudaStream_t stream) {
  voxel3d_forward_kernel<T><<<blocks_for(nz * ny * nx), kThreads, 0, stream>>>(
      volume, frames_t, fdk, out, batch, n_views, n_rows, n_cols, nz, ny, nx);
  return cudaGetLastError();
}

template <typename T>
cudaError_t voxel3d_adjoint_cuda(const T* proj, const T* frames_t, const T* fdk, T* out, int64_t batch,
                                 int64_t n_views, int64_t n_rows, int64_t n_cols, int64_t nz, int64_t ny, int64_t nx,
                                 cudaStream_t stream) {
  voxel3d_adjoint_kernel<T><<<blocks_for(nz * ny * nx), kThreads, 0, stream>>>(
      proj, frames_t, fdk, out, batch, n_views, n_rows, n_cols, nz, ny, nx);
  return cudaGetLastError();
}

#define KNOWN_OPS_INSTANTIATE(T)                                                                                    \
  template cudaError_t voxel2d_forward_cuda<T>(const T*, const T*, const T*, T*, int64_t, int64_t, int64_t, int64_t, \
                                               int64_t, T, T, cudaStream_t);                                        \
  template cudaError_t voxel2d_adjoint_cuda<T>(const T*, const T*, const T*, T*, int64_t, int64_t, int64_t, int64_t, \
                                               int64_t, T, T, cudaStream_t);                                        \
  template cudaError_t voxel3d_forward_cuda<T>(const T*, const T*, const T*, T*, int64_t, int64_t, int64_t, int64_t, \
                                               int64_t, int64_t, int64_t, cudaStream_t);                            \
  template cudaError_t voxel3d_adjoint_cuda<T>(const T*, const T*, const T*, T*, int64_t, int64_t, int64_t, int64_t, \
                                               int64_t, int64_t, int64_t, cudaStream_t);
KNOWN_OPS_INSTANTIATE(float)
KNOWN_OPS_INSTANTIATE(double)
#undef KNOWN_OPS_INSTANTIATE

}  // namespace known_ops
