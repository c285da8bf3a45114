"""Builds the compiled extension known_ops._C with torch.utils.cpp_extension.

The C++ CPU kernels are always built; the CUDA kernels are added when the
installed torch is a CUDA build and nvcc is found (or KNOWN_OPS_CUDA=1 forces
it, KNOWN_OPS_CUDA=0 disables it).  Build against the installed torch:

    pip install --no-build-isolation -e .
"""
import importlib.util
import os
from pathlib import Path

from setuptools import setup

import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

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


with_cuda = want_cuda()
write_build_info(with_cuda)

cpu_sources = ["csrc/ops.cpp", "csrc/joseph2d_cpu.cpp", "csrc/joseph3d_cpu.cpp", "csrc/voxel_cpu.cpp"]
cxx_flags = ["-O3", "-std=c++20", "-fno-math-errno"]
if with_cuda:
    extension = CUDAExtension(
        "known_ops._C",
        cpu_sources
        + ["csrc/joseph2d_cuda_binding.cpp", "csrc/joseph2d_cuda.cu"]
        + ["csrc/joseph3d_cuda_binding.cpp", "csrc/joseph3d_cuda.cu"]
        + ["csrc/voxel_cuda_binding.cpp", "csrc/voxel_cuda.cu"],
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-std=c++20"]},
    )
else:
    extension = CppExtension("known_ops._C", cpu_sources, extra_compile_args={"cxx": cxx_flags})

setup(ext_modules=[extension], cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)})
