// Torch binding of the 2D Joseph CUDA kernels (compiled only for CUDA builds).
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "joseph2d_cpu.h"
#include "joseph2d_cuda.h"

namespace known_ops {
namespace {

at::Tensor joseph2d_forward_cuda_op(const at::Tensor& image, const at::Tensor& rays, const at::Tensor& views) {
  check_joseph2d_forward_inputs(image, rays, views);
  const c10::cuda::CUDAGuard guard(image.device());
  auto img = image.contiguous();
  auto ray_table = rays.contiguous();
  const int64_t batch = img.size(0), ny = img.size(1), nx = img.size(2), n_views = ray_table.size(0),
                n_det = ray_table.size(1);
  auto out = at::empty({batch, n_views, n_det}, img.options());
  AT_DISPATCH_FLOATING_TYPES(img.scalar_type(), "joseph2d_forward_cuda", [&] {
    const cudaError_t err = joseph2d_forward_cuda<scalar_t>(img.data_ptr<scalar_t>(), ray_table.data_ptr<scalar_t>(),
                                                            out.data_ptr<scalar_t>(), batch, n_views, n_det, ny, nx,
                                                            c10::cuda::getCurrentCUDAStream());
    TORCH_CHECK(err == cudaSuccess, "joseph2d_forward: CUDA launch failed: ", cudaGetErrorString(err));
  });
  return out;
}

at::Tensor joseph2d_adjoint_cuda_op(const at::Tensor& sino, const at::Tensor& rays, const at::Tensor& views,
                                    int64_t ny, int64_t nx) {
  check_joseph2d_adjoint_inputs(sino, rays, views, ny, nx);
  const c10::cuda::CUDAGuard guard(sino.device());
  auto s = sino.contiguous();
  auto ray_table = rays.contiguous();
  auto view_table = views.contiguous();
  const int64_t batch = s.size(0), n_views = s.size(1), n_det = s.size(2);
  auto out = at::empty({batch, ny, nx}, s.options());
  if (n_views == 0) return out.zero_();
  AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "joseph2d_adjoint_cuda", [&] {
    const cudaError_t err = joseph2d_adjoint_cuda<scalar_t>(
        s.data_ptr<scalar_t>(), ray_table.data_ptr<scalar_t>(), view_table.data_ptr<scalar_t>(),
        out.data_ptr<scalar_t>(), batch, n_views, n_det, ny, nx, c10::cuda::getCurrentCUDAStream());
    TORCH_CHECK(err == cudaSuccess, "joseph2d_adjoint: CUDA launch failed: ", cudaGetErrorString(err));
  });
  return out;
}

}  // namespace
}  // namespace known_ops

TORCH_LIBRARY_IMPL(known_ops, CUDA, m) {
  m.impl("joseph2d_forward", &known_ops::joseph2d_forward_cuda_op);
  m.impl("joseph2d_adjoint", &known_ops::joseph2d_adjoint_cuda_op);
  m.impl("joseph2d_adjoint_gather", &known_ops::joseph2d_adjoint_cuda_op);
}
