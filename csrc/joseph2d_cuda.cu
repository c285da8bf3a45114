// CUDA kernels of the 2D Joseph projector pair, built from the same header
// math as the CPU loops (joseph2d.h).
//
// Forward: one thread per ray, neighbouring threads on neighbouring detector
// bins of the same view (their samples are close in memory).
// Adjoint: one thread per pixel, looping over views and gathering the rays
// that touch the pixel (gather_view): the exact transpose of the forward,
// without atomics, hence deterministic.
#include "joseph2d_cuda.h"

#include "joseph2d.h"

namespace known_ops {
namespace {

constexpr int kThreads = 256;

// Image value with zero outside the grid.
template <typename T>
__device__ __forceinline__ T pixel_or_zero(const T* __restrict__ img, int64_t i, int64_t j, int64_t ny, int64_t nx) {
  return (i >= 0 && i < ny && j >= 0 && j < nx) ? __ldg(img + i * nx + j) : T(0);
}

template <typename T>
__global__ void forward_kernel(const T* __restrict__ image, const T* __restrict__ rays, T* __restrict__ out,
                               int64_t batch, int64_t n_views, int64_t n_det, int64_t ny, int64_t nx) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= batch * n_views * n_det) return;
  const int64_t ray_index = t % (n_views * n_det);
  const int64_t b = t / (n_views * n_det);
  const T* r = rays + ray_index * RAY_FIELDS;
  const T* img = image + b * ny * nx;
  const bool x_major = r[3] != T(0);
  const int64_t n_major = x_major ? nx : ny, n_minor = x_major ? ny : nx;
  int64_t first, last;
  clip_march<T>(r[0], r[1], T(-1.5), T(n_minor) + T(0.5), n_major, &first, &last);
  T acc = T(0);
  for (int64_t m = first; m <= last; ++m) {
    const T p = r[0] + r[1] * T(m);
    const int64_t k = int64_t(floor_(p));
    const T f = p - T(k);
    const T lo = x_major ? pixel_or_zero(img, k, m, ny, nx) : pixel_or_zero(img, m, k, ny, nx);
    const T hi = x_major ? pixel_or_zero(img, k + 1, m, ny, nx) : pixel_or_zero(img, m, k + 1, ny, nx);
    acc += lo + f * (hi - lo);
  }
  out[t] = r[2] * acc;
}

template <typename T>
__global__ void adjoint_kernel(const T* __restrict__ sino, const T* __restrict__ rays, const T* __restrict__ views,
                               T* __restrict__ out, int64_t batch, int64_t n_views, int64_t n_det, int64_t ny,
                               int64_t nx) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= batch * ny * nx) return;
  const int64_t j = t % nx, i = (t / nx) % ny, b = t / (nx * ny);
  T acc = T(0);
  for (int64_t v = 0; v < n_views; ++v)
    acc += gather_view(rays + v * n_det * RAY_FIELDS, views + v * VIEW_FIELDS, sino + (b * n_views + v) * n_det,
                       n_det, i, j);
  out[t] = acc;
}

int64_t blocks_for(int64_t n) { return (n + kThreads - 1) / kThreads; }

}  // namespace

template <typename T>
cudaError_t joseph2d_forward_cuda(const T* image, const T* rays, T* out, int64_t batch, int64_t n_views,
                                  int64_t n_det, int64_t ny, int64_t nx, cudaStream_t stream) {
  const int64_t n = batch * n_views * n_det;
  if (n == 0) return cudaSuccess;
  forward_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(image, rays, out, batch, n_views, n_det, ny, nx);
  return cudaGetLastError();
}

template <typename T>
cudaError_t joseph2d_adjoint_cuda(const T* sino, const T* rays, const T* views, T* out, int64_t batch,
                                  int64_t n_views, int64_t n_det, int64_t ny, int64_t nx, cudaStream_t stream) {
  const int64_t n = batch * ny * nx;
  if (n == 0) return cudaSuccess;
  adjoint_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(sino, rays, views, out, batch, n_views, n_det, ny, nx);
  return cudaGetLastError();
}

template cudaError_t joseph2d_forward_cuda<float>(const float*, const float*, float*, int64_t, int64_t, int64_t,
                                                  int64_t, int64_t, cudaStream_t);
template cudaError_t joseph2d_forward_cuda<double>(const double*, const double*, double*, int64_t, int64_t, int64_t,
                                                   int64_t, int64_t, cudaStream_t);
template cudaError_t joseph2d_adjoint_cuda<float>(const float*, const float*, const float*, float*, int64_t, int64_t,
                                                  int64_t, int64_t, int64_t, cudaStream_t);
template cudaError_t joseph2d_adjoint_cuda<double>(const double*, const double*, const double*, double*, int64_t,
                                                   int64_t, int64_t, int64_t, int64_t, cudaStream_t);

}  // namespace known_ops
