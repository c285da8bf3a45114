// Operator schemas and CPU registrations.  Autograd and fake (meta) kernels are
// registered from Python (known_ops/_ops.py), as PyTorch's custom-operator
// guide recommends.
#include <Python.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <set>
#include <vector>

#include "joseph2d_cpu.h"
#include "joseph3d_cpu.h"
#include "voxel_cpu.h"

// Importing known_ops._C runs the static registrations below; the module itself
// is empty.
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace {

// The number of threads that run the items of at::parallel_for(0, n, 1, ...):
// the distinct at::get_thread_num() values.  Always 1 when the extension was
// built without torch's parallel backend (see openmp_flags in setup.py), which
// tests/test_parallel.py checks.
int64_t parallel_threads_used(int64_t n) {
  TORCH_CHECK(n >= 0, "_parallel_threads_used: n must be >= 0");
  std::vector<int> thread_of(n);  // one slot per item: no two threads write the same one
  at::parallel_for(0, n, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) thread_of[i] = at::get_thread_num();
  });
  return int64_t(std::set<int>(thread_of.begin(), thread_of.end()).size());
}

}  // namespace

TORCH_LIBRARY(known_ops, m) {
  m.def("joseph2d_tables(Tensor vectors, int kind, int n_det, int ny, int nx, float[] spacing_offset) -> (Tensor, Tensor)");
  m.def("geometry2d_rays(Tensor vectors, int kind, int n_det) -> Tensor");
  m.def("joseph2d_forward(Tensor image, Tensor rays, Tensor views) -> Tensor");
  m.def("joseph2d_adjoint(Tensor sino, Tensor rays, Tensor views, int ny, int nx) -> Tensor");
  // The pixel-driven form of the same adjoint (the CUDA algorithm); exposed so
  // the CPU tests exercise the GPU's math.
  m.def("joseph2d_adjoint_gather(Tensor sino, Tensor rays, Tensor views, int ny, int nx) -> Tensor");
  m.def("joseph3d_frames(Tensor vectors, int kind, int n_rows, int n_cols, int nz, int ny, int nx, "
        "float[] spacing_offset) -> Tensor");
  m.def("joseph3d_forward(Tensor volume, Tensor frames, int n_rows, int n_cols) -> Tensor");
  m.def("joseph3d_adjoint(Tensor proj, Tensor frames, int nz, int ny, int nx) -> Tensor");
  m.def("joseph3d_adjoint_gather(Tensor proj, Tensor frames, int nz, int ny, int nx) -> Tensor");
  // The voxel-driven pair (model="voxel"), on the Joseph pair's view tables / frames.
  m.def("voxel2d_forward(Tensor image, Tensor views, int n_det, float[] spacing, Tensor? fdk_weights) -> Tensor");
  m.def("voxel2d_adjoint(Tensor sino, Tensor views, int ny, int nx, float[] spacing, Tensor? fdk_weights) -> Tensor");
  m.def("voxel3d_forward(Tensor volume, Tensor frames, int n_rows, int n_cols, Tensor? fdk_weights) -> Tensor");
  m.def("voxel3d_adjoint(Tensor proj, Tensor frames, int nz, int ny, int nx, Tensor? fdk_weights) -> Tensor");
  // A diagnostic of the build (no tensors, so one kernel for every backend).
  m.def("_parallel_threads_used(int n) -> int", &parallel_threads_used);
}

TORCH_LIBRARY_IMPL(known_ops, CPU, m) {
  m.impl("joseph2d_tables", &known_ops::joseph2d_tables);
  m.impl("geometry2d_rays", &known_ops::geometry2d_rays);
  m.impl("joseph2d_forward", &known_ops::joseph2d_forward_cpu);
  m.impl("joseph2d_adjoint", &known_ops::joseph2d_adjoint_cpu);
  m.impl("joseph2d_adjoint_gather", &known_ops::joseph2d_adjoint_gather_cpu);
  m.impl("joseph3d_frames", &known_ops::joseph3d_frames);
  m.impl("joseph3d_forward", &known_ops::joseph3d_forward_cpu);
  m.impl("joseph3d_adjoint", &known_ops::joseph3d_adjoint_cpu);
  m.impl("joseph3d_adjoint_gather", &known_ops::joseph3d_adjoint_gather_cpu);
  m.impl("voxel2d_forward", &known_ops::voxel2d_forward_cpu);
  m.impl("voxel2d_adjoint", &known_ops::voxel2d_adjoint_cpu);
  m.impl("voxel3d_forward", &known_ops::voxel3d_forward_cpu);
  m.impl("voxel3d_adjoint", &known_ops::voxel3d_adjoint_cpu);
}
