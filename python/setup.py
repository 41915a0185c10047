# The extension of grpokit_torch: the operators (grpokit_torch/csrc) compiled against grpokit's
# headers from this repository (GRPOKIT_INCLUDE overrides the folder). The CPU operators always; the
# CUDA ones (csrc/*_cuda.cu, the device path) when torch was built with CUDA and the toolkit is
# found (CUDA_HOME), unless GRPOKIT_TORCH_CUDA=0; in one translation unit (cuda_operators.cu:
# nvcc spends about 30 s on torch's headers per unit). Their architectures: TORCH_CUDA_ARCH_LIST
# (default "8.0;9.0"). The bf16 / fp16 storage types come from the toolkit's headers (cuda_bf16.h).
# The C++ standard is the one this torch asks for (C++17 up to 2.9, C++20 since).
import os
from pathlib import Path

import torch
from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

here = Path(__file__).resolve().parent
grpokit_include = os.environ.get("GRPOKIT_INCLUDE", str(here.parent / "include"))
cuda_include = os.path.join(CUDA_HOME or "/usr/local/cuda", "include")
if not Path(grpokit_include, "grpokit", "grpokit.hpp").is_file():
    raise RuntimeError(f"grpokit headers not found in {grpokit_include} (set GRPOKIT_INCLUDE)")
if not Path(cuda_include, "cuda_bf16.h").is_file():
    raise RuntimeError(f"cuda_bf16.h not found in {cuda_include} (set CUDA_HOME to the CUDA toolkit)")

with_cuda = (torch.version.cuda is not None and CUDA_HOME is not None
             and os.environ.get("GRPOKIT_TORCH_CUDA", "1") != "0")
ops = ("token_logprobs", "fused_loss", "fused_linear_loss", "advantages")
sources = [f"grpokit_torch/csrc/{name}.cpp" for name in ("library",) + ops]
cxx = ["-O2", "-fopenmp"]
if with_cuda:
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    sources += ["grpokit_torch/csrc/cuda_operators.cu"]
    defines = ["-DGRPOKIT_TORCH_CUDA=1"]
    extension = CUDAExtension(
        "grpokit_torch._C", sources, include_dirs=[grpokit_include],
        extra_compile_args={"cxx": cxx + defines, "nvcc": ["-O3", "--expt-relaxed-constexpr"] + defines},
        extra_link_args=["-fopenmp"], libraries=["cublas"])
else:
    extension = CppExtension("grpokit_torch._C", sources, include_dirs=[grpokit_include, cuda_include],
                             extra_compile_args=cxx, extra_link_args=["-fopenmp"])

setup(ext_modules=[extension], cmdclass={"build_ext": BuildExtension})
