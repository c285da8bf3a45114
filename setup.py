"""Builds the compiled extension known_ops._C with torch.utils.cpp_extension.

The C++ CPU kernels are always built; the CUDA kernels are added when the
installed torch is a CUDA build and nvcc is found (or KNOWN_OPS_CUDA=1 forces
it, KNOWN_OPS_CUDA=0 disables it).  Build against the installed torch:

    pip install --no-build-isolation -e .
"""
import importlib.util
import os
import sys
import warnings
from pathlib import Path

from setuptools import setup

import torch
from torch.utils.cpp_extension import (
    CUDA_HOME,
    BuildExtension,
    CppExtension,
    CUDAExtension,
    check_compiler_is_gcc,
    get_cxx_compiler,
)

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"


def load_fingerprint_module():
    """known_ops/_fingerprint.py, loaded by path (importing known_ops would need the extension)."""
    spec = importlib.util.spec_from_file_location("_known_ops_fingerprint", ROOT / "known_ops" / "_fingerprint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def want_cuda() -> bool:
    forced = os.environ.get("KNOWN_OPS_CUDA")
    if forced is not None:
        return forced == "1"
    return torch.version.cuda is not None and CUDA_HOME is not None


def write_build_info(with_cuda: bool) -> None:
    (ROOT / "known_ops" / "_build_info.py").write_text(
        "# Written by setup.py at build time; do not edit.\n"
        f"SOURCE_FINGERPRINT = {load_fingerprint_module().source_fingerprint(CSRC, with_cuda)!r}\n"
        f"TORCH_VERSION = {torch.__version__!r}\n"
        f"WITH_CUDA = {with_cuda!r}\n"
    )


def openmp_flags() -> tuple[list[str], list[str]]:
    """Compile flags and link arguments of the C++ sources that make at::parallel_for run in parallel.

    With torch's OpenMP backend, at::parallel_for is a header template that expands into
    `#pragma omp parallel` in our own objects (ATen/ParallelOpenMP.h): built without the compiler's
    OpenMP flag, every CPU loop runs on one thread.  The objects are linked against the libgomp
    that torch itself loads (the wheels ship one in torch/lib, which auditwheel may rename
    libgomp-<hash>.so.1), so that the process has one OpenMP runtime, the one whose thread count
    torch.set_num_threads sets; a torch that ships none uses the system's libgomp.so.1, as
    -fopenmp does.  Other compilers bring their own runtime (clang: libomp, MSVC: vcomp), which
    torch would not configure: there the extension is built serial, with a warning.
    """
    if "ATen parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return [], []  # native or TBB backend: parallel_for calls into libtorch's own thread pool
    if not (sys.platform.startswith("linux") and check_compiler_is_gcc(get_cxx_compiler())):
        warnings.warn(
            f"known_ops: OpenMP is used only with GCC on Linux (compiler {get_cxx_compiler()}, "
            f"platform {sys.platform}); the CPU kernels will run on one thread"
        )
        return [], []
    shipped = sorted((Path(torch.__file__).parent / "lib").glob("libgomp*.so*"))
    return ["-fopenmp"], [str(shipped[0])] if shipped else ["-fopenmp"]


with_cuda = want_cuda()
write_build_info(with_cuda)

cpu_sources = ["csrc/ops.cpp", "csrc/joseph2d_cpu.cpp", "csrc/joseph3d_cpu.cpp", "csrc/voxel_cpu.cpp"]
openmp_compile, openmp_link = openmp_flags()
cxx_flags = ["-O3", "-std=c++20", "-fno-math-errno"] + openmp_compile
# nvcc compiles only the .cu kernels, which have no host loops: it needs no OpenMP flag.
if with_cuda:
    extension = CUDAExtension(
        "known_ops._C",
        cpu_sources
        + ["csrc/joseph2d_cuda_binding.cpp", "csrc/joseph2d_cuda.cu"]
        + ["csrc/joseph3d_cuda_binding.cpp", "csrc/joseph3d_cuda.cu"]
        + ["csrc/voxel_cuda_binding.cpp", "csrc/voxel_cuda.cu"],
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-std=c++20"]},
        extra_link_args=openmp_link,
    )
else:
    extension = CppExtension(
        "known_ops._C", cpu_sources, extra_compile_args={"cxx": cxx_flags}, extra_link_args=openmp_link
    )

setup(ext_modules=[extension], cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)})
