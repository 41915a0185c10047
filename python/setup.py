# The extension of grpokit_torch: the operators (grpokit_torch/csrc) compiled against grpokit's
# headers from this repository (GRPOKIT_INCLUDE overrides the folder). The host path only for now;
# the bf16 / fp16 storage types come from the CUDA toolkit's headers (cuda_bf16.h, cuda_fp16.h).
import os
from pathlib import Path

from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension

here = Path(__file__).resolve().parent
grpokit_include = os.environ.get("GRPOKIT_INCLUDE", str(here.parent / "include"))
cuda_include = os.path.join(CUDA_HOME or "/usr/local/cuda", "include")
if not Path(grpokit_include, "grpokit", "grpokit.hpp").is_file():
    raise RuntimeError(f"grpokit headers not found in {grpokit_include} (set GRPOKIT_INCLUDE)")
if not Path(cuda_include, "cuda_bf16.h").is_file():
    raise RuntimeError(f"cuda_bf16.h not found in {cuda_include} (set CUDA_HOME to the CUDA toolkit)")

setup(
    ext_modules=[
        CppExtension(
            "grpokit_torch._C",
            [f"grpokit_torch/csrc/{name}.cpp" for name in ("library", "token_logprobs", "fused_loss", "advantages")],
            include_dirs=[grpokit_include, cuda_include],
            extra_compile_args=["-O2", "-std=c++17", "-fopenmp"],
            extra_link_args=["-fopenmp"],
        )
    ],
    cmdclass={"build_ext": BuildExtension},
)
