"""Build wfn_kernels (+ the wfn_kernels._C extension from csrc/) and the simulator as wfn_sim.

Environment switches:
  WFN_BUILD_EXT=0   pure-Python install (no C++/CUDA extension; the reference kernels still work)
  WFN_BUILD_CUDA=0  skip CUDA sources even when torch has CUDA (default: build them when it does)
"""

import glob
import os

from setuptools import find_packages, setup


def extensions():
    if os.environ.get("WFN_BUILD_EXT", "1") == "0":
        return [], {}
    import torch
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    sources = ["csrc/module.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp"))
    cxx = ["-O3", "-std=c++17", "-fopenmp"]
    with_cuda = torch.version.cuda is not None and os.environ.get("WFN_BUILD_CUDA", "1") != "0"
    if with_cuda:
        sources += sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp"))
        nvcc = ["-O3", "-std=c++17", "-lineinfo"]  # no --use_fast_math: it flushes subnormal codebook values
        ext = CUDAExtension("wfn_kernels._C", sources, define_macros=[("WFN_WITH_CUDA", None)],
                            extra_compile_args={"cxx": cxx, "nvcc": nvcc}, extra_link_args=["-fopenmp"])
    else:
        ext = CppExtension("wfn_kernels._C", sources, extra_compile_args={"cxx": cxx},
                           extra_link_args=["-fopenmp"])
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = extensions()

setup(
    name="wfn-kernels",
    version="0.1.0",
    description="Weight Fixing Networks: few-unique-value weights, codebook kernels and an accelerator model",
    python_requires=">=3.10",
    packages=find_packages(include=["wfn_kernels", "wfn_kernels.*"]) + ["wfn_sim", "wfn_sim.configs"],
    package_dir={"wfn_sim": "sim"},
    package_data={"wfn_sim": ["configs/*.yaml", "configs/*.csv"]},
    # The torch floor is the oldest version the test suite runs on (requirements-dev.txt pins it). The
    # private-API fast paths (wfn_kernels/nn/torch_internals.py) switch themselves off on untested versions.
    install_requires=["torch>=2.13", "numpy", "safetensors"],
    extras_require={"plots": ["matplotlib"], "cli": ["tqdm", "pyyaml"], "data": ["scikit-learn"],
                    "torchao": ["torchao>=0.18"], "triton": ["triton"],
                    "all": ["matplotlib", "tqdm", "pyyaml", "scikit-learn", "torchao>=0.18", "triton"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    entry_points={"console_scripts": ["wfn=wfn_kernels.workflows.cli:main", "wfn-sim=wfn_sim.cli:main"]},
)
