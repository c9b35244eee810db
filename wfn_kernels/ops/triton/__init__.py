"""Triton backend: registers ``torch.ops.wfn.codebook_linear_triton`` (float mode) and, for the compute
modes, ``wfn::bf16_linear_triton`` and ``wfn::int_linear_triton`` (mode_ops.py) on import.

Importing needs only the ``triton`` package, not a GPU: the kernels are compiled at the first launch.
Without CUDA the op runs only under TRITON_INTERPRET=1 (set before triton is imported; CPU, for
correctness tests only) and otherwise raises, naming why.
"""

from .launcher import GEMV_MAX_M, LaunchConfig, choose_config, codebook_linear_triton_launch, interpreting
from .mode_ops import bf16_linear_triton, int_linear_triton
from .op import codebook_linear_triton

__all__ = ["GEMV_MAX_M", "LaunchConfig", "bf16_linear_triton", "choose_config", "codebook_linear_triton",
           "int_linear_triton",
           "codebook_linear_triton_launch", "interpreting"]
