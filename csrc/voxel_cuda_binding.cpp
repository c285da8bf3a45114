// Torch binding of the voxel-driven CUDA kernels (compiled only for CUDA
// builds): the operands are checked and prepared as for the CPU
// (voxel_cpu.h), then handed to the launchers of voxel_cuda.h.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "voxel_cpu.h"
#include "voxel_cuda.h"

namespace known_ops {
namespace {

void check_cuda(const VoxelOperands& ops, const char* name) {
  TORCH_CHECK(ops.data.is_cuda(), name, ": expected CUDA tensors, got ", ops.data.device());
}

void check_launch(cudaError_t err, const char* name) {
  TORCH_CHECK(err == cudaSuccess, name, ": CUDA launch failed: ", cudaGetErrorString(err));
}

at::Tensor voxel2d_forward_cuda_op(const at::Tensor& image, const at::Tensor& views, int64_t n_det,
                                   at::ArrayRef<double> spacing, const c10::optional<at::Tensor>& fdk_weights) {
  const c10::cuda::CUDAGuard guard(image.device());
  VoxelOperands ops = voxel2d_forward_operands(image, views, n_det, spacing, fdk_weights);
  check_cuda(ops, "voxel2d_forward");
  if (ops.out.numel() == 0 || ops.data.numel() == 0) return ops.out;
  AT_DISPATCH_FLOATING_TYPES(ops.data.scalar_type(), "voxel2d_forward_cuda", [&] {
    check_launch(voxel2d_forward_cuda<scalar_t>(
                     ops.data.data_ptr<scalar_t>(), ops.table.data_ptr<scalar_t>(), pointer_or_null<scalar_t>(ops.fdk),
                     ops.out.data_ptr<scalar_t>(), ops.data.size(0), ops.table.size(0), n_det, ops.data.size(1),
                     ops.data.size(2), scalar_t(spacing[0]), scalar_t(spacing[1]), c10::cuda::getCurrentCUDAStream()),
                 "voxel2d_forward");
  });
  return ops.out;
}

at::Tensor voxel2d_adjoint_cuda_op(const at::Tensor& sino, const at::Tensor& views, int64_t ny, int64_t nx,
                                   at::ArrayRef<double> spacing, const c10::optional<at::Tensor>& fdk_weights) {
  const c10::cuda::CUDAGuard guard(sino.device());
  VoxelOperands ops = voxel2d_adjoint_operands(sino, views, ny, nx, spacing, fdk_weights);
  check_cuda(ops, "voxel2d_adjoint");
  if (ops.out.numel() == 0 || ops.data.numel() == 0) return ops.out;
  AT_DISPATCH_FLOATING_TYPES(ops.data.scalar_type(), "voxel2d_adjoint_cuda", [&] {
    check_launch(voxel2d_adjoint_cuda<scalar_t>(
                     ops.data.data_ptr<scalar_t>(), ops.table.data_ptr<scalar_t>(), pointer_or_null<scalar_t>(ops.fdk),
                     ops.out.data_ptr<scalar_t>(), ops.data.size(0), ops.data.size(1), ops.data.size(2), ny, nx,
                     scalar_t(spacing[0]), scalar_t(spacing[1]), c10::cuda::getCurrentCUDAStream()),
                 "voxel2d_adjoint");
  });
  return ops.out;
}

at::Tensor voxel3d_forward_cuda_op(const at::Tensor& volume, const at::Tensor& frames, int64_t n_rows, int64_t n_cols,
                                   const c10::optional<at::Tensor>& fdk_weights) {
  const c10::cuda::CUDAGuard guard(volume.device());
  VoxelOperands ops = voxel3d_forward_operands(volume, frames, n_rows, n_cols, fdk_weights);
  check_cuda(ops, "voxel3d_forward");
  if (ops.out.numel() == 0 || ops.data.numel() == 0) return ops.out;
  AT_DISPATCH_FLOATING_TYPES(ops.data.scalar_type(), "voxel3d_forward_cuda", [&] {
    check_launch(voxel3d_forward_cuda<scalar_t>(
                     ops.data.data_ptr<scalar_t>(), ops.table.data_ptr<scalar_t>(), pointer_or_null<scalar_t>(ops.fdk),
                     ops.out.data_ptr<scalar_t>(), ops.data.size(0), ops.table.size(0), n_rows, n_cols,
                     ops.data.size(1), ops.data.size(2), ops.data.size(3), c10::cuda::getCurrentCUDAStream()),
                 "voxel3d_forward");
  });
  return ops.out;
}

at::Tensor voxel3d_adjoint_cuda_op(const at::Tensor& proj, const at::Tensor& frames, int64_t nz, int64_t ny,
                                   int64_t nx, const c10::optional<at::Tensor>& fdk_weights) {
  const c10::cuda::CUDAGuard guard(proj.device());
  VoxelOperands ops = voxel3d_adjoint_operands(proj, frames, nz, ny, nx, fdk_weights);
  check_cuda(ops, "voxel3d_adjoint");
  if (ops.out.numel() == 0 || ops.data.numel() == 0) return ops.out;
  AT_DISPATCH_FLOATING_TYPES(ops.data.scalar_type(), "voxel3d_adjoint_cuda", [&] {
    check_launch(voxel3d_adjoint_cuda<scalar_t>(
                     ops.data.data_ptr<scalar_t>(), ops.table.data_ptr<scalar_t>(), pointer_or_null<scalar_t>(ops.fdk),
                     ops.out.data_ptr<scalar_t>(), ops.data.size(0), ops.data.size(1), ops.data.size(2),
                     ops.data.size(3), nz, ny, nx, c10::cuda::getCurrentCUDAStream()),
                 "voxel3d_adjoint");
  });
  return ops.out;
}

}  // namespace
}  // namespace known_ops

TORCH_LIBRARY_IMPL(known_ops, CUDA, m) {
  m.impl("voxel2d_forward", &known_ops::voxel2d_forward_cuda_op);
  m.impl("voxel2d_adjoint", &known_ops::voxel2d_adjoint_cuda_op);
  m.impl("voxel3d_forward", &known_ops::voxel3d_forward_cuda_op);
  m.impl("voxel3d_adjoint", &known_ops::voxel3d_adjoint_cuda_op);
}
