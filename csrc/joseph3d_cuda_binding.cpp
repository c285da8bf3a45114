// Torch binding of the 3D Joseph CUDA kernels (compiled only for CUDA builds).
//
// The kernels' workspace (the ray table of a chunk of views) is allocated
// here through torch's caching allocator.  Its size is bounded by
// KNOWN_OPS_CUDA_TABLE_BYTES when that environment variable is set (read at
// every call), else by min(256 MiB, a quarter of the device's free memory).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cerrno>
#include <cstdlib>

#include "joseph3d.h"
#include "joseph3d_cpu.h"
#include "joseph3d_cuda.h"

namespace known_ops {
namespace {

// At most 256 MiB of ray table (e.g. 128 views of 256^2 pixels in float32):
// enough views per chunk that launches are long, small beside the data.
constexpr int64_t kDefaultTableBytes = int64_t(256) << 20;

// Bytes the adjoint may spend on its ray table.
int64_t table_budget_bytes() {
  if (const char* env = std::getenv("KNOWN_OPS_CUDA_TABLE_BYTES"); env != nullptr && *env != '\0') {
    errno = 0;
    char* end = nullptr;
    const long long value = std::strtoll(env, &end, 10);
    TORCH_CHECK(errno == 0 && end != env && *end == '\0' && value > 0,
                "joseph3d_adjoint: the environment variable KNOWN_OPS_CUDA_TABLE_BYTES must be a positive integer "
                "(bytes), got '",
                env, "'");
    return int64_t(value);
  }
  size_t free_bytes = 0, total_bytes = 0;
  const cudaError_t err = cudaMemGetInfo(&free_bytes, &total_bytes);
  TORCH_CHECK(err == cudaSuccess, "joseph3d_adjoint: cudaMemGetInfo failed: ", cudaGetErrorString(err));
  const int64_t quarter = int64_t(free_bytes / 4);
  return quarter < kDefaultTableBytes ? quarter : kDefaultTableBytes;
}

// The ray table of a chunk of views (as many views as the budget holds, at
// least one) and the per-view sets of major axes: the kernels' workspace.
struct ChunkWorkspace {
  int64_t chunk_views;
  at::Tensor rays, majors;
  ChunkWorkspace(int64_t n_views, int64_t n_rows, int64_t n_cols, const at::TensorOptions& options) {
    const int64_t view_table_bytes = n_rows * n_cols * RAY3_FIELDS * int64_t(c10::elementSize(options.dtype().toScalarType()));
    chunk_views = table_budget_bytes() / view_table_bytes;
    chunk_views = chunk_views < 1 ? 1 : (chunk_views > n_views ? n_views : chunk_views);
    rays = at::empty({chunk_views, n_rows, n_cols, RAY3_FIELDS}, options);
    majors = at::empty({chunk_views}, options.dtype(at::kInt));
  }
};

at::Tensor joseph3d_forward_cuda_op(const at::Tensor& volume, const at::Tensor& frames, int64_t n_rows,
                                    int64_t n_cols) {
  check_joseph3d_forward_inputs(volume, frames, n_rows, n_cols);
  TORCH_CHECK(volume.is_cuda(), "joseph3d_forward: expected CUDA tensors, got volume on ", volume.device());
  const c10::cuda::CUDAGuard guard(volume.device());
  auto vol = volume.contiguous();
  auto fr = frames.contiguous();
  const int64_t batch = vol.size(0), nz = vol.size(1), ny = vol.size(2), nx = vol.size(3), n_views = fr.size(0);
  auto out = at::empty({batch, n_views, n_rows, n_cols}, vol.options());
  if (out.numel() == 0) return out;
  if (vol.numel() == 0) return out.zero_();
  // x-major rays read this copy with x and y exchanged (coalesced loads); it
  // costs one transpose and the input's size in memory.
  auto swapped = vol.transpose(2, 3).contiguous();
  ChunkWorkspace ws(n_views, n_rows, n_cols, vol.options());
  AT_DISPATCH_FLOATING_TYPES(vol.scalar_type(), "joseph3d_forward_cuda", [&] {
    const cudaError_t err = joseph3d_forward_cuda<scalar_t>(
        vol.data_ptr<scalar_t>(), swapped.data_ptr<scalar_t>(), fr.data_ptr<double>(), out.data_ptr<scalar_t>(), batch,
        n_views, n_rows, n_cols, nz, ny, nx, ws.chunk_views, ws.rays.data_ptr<scalar_t>(), ws.majors.data_ptr<int>(),
        c10::cuda::getCurrentCUDAStream());
    TORCH_CHECK(err == cudaSuccess, "joseph3d_forward: CUDA launch failed: ", cudaGetErrorString(err));
  });
  return out;
}

at::Tensor joseph3d_adjoint_cuda_op(const at::Tensor& proj, const at::Tensor& frames, int64_t nz, int64_t ny,
                                    int64_t nx) {
  check_joseph3d_adjoint_inputs(proj, frames, nz, ny, nx);
  TORCH_CHECK(proj.is_cuda(), "joseph3d_adjoint: expected CUDA tensors, got projections on ", proj.device());
  const c10::cuda::CUDAGuard guard(proj.device());
  auto p = proj.contiguous();
  auto fr = frames.contiguous();
  const int64_t batch = p.size(0), n_views = p.size(1), n_rows = p.size(2), n_cols = p.size(3);
  auto out = at::empty({batch, nz, ny, nx}, p.options());
  if (out.numel() == 0 || p.numel() == 0) return out.zero_();
  ChunkWorkspace ws(n_views, n_rows, n_cols, p.options());
  auto frames_t = fr.to(p.scalar_type()).contiguous();  // the detector boxes are computed in the data's precision
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "joseph3d_adjoint_cuda", [&] {
    const cudaError_t err = joseph3d_adjoint_cuda<scalar_t>(
        p.data_ptr<scalar_t>(), fr.data_ptr<double>(), frames_t.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), batch,
        n_views, n_rows, n_cols, nz, ny, nx, ws.chunk_views, ws.rays.data_ptr<scalar_t>(), ws.majors.data_ptr<int>(),
        c10::cuda::getCurrentCUDAStream());
    TORCH_CHECK(err == cudaSuccess, "joseph3d_adjoint: CUDA launch failed: ", cudaGetErrorString(err));
  });
  return out;
}

}  // namespace
}  // namespace known_ops

TORCH_LIBRARY_IMPL(known_ops, CUDA, m) {
  m.impl("joseph3d_forward", &known_ops::joseph3d_forward_cuda_op);
  // The CUDA adjoint is the gather; both names run it (the scatter form exists only on the CPU).
  m.impl("joseph3d_adjoint", &known_ops::joseph3d_adjoint_cuda_op);
  m.impl("joseph3d_adjoint_gather", &known_ops::joseph3d_adjoint_cuda_op);
}
