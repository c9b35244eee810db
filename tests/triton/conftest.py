"""Triton tests run natively on a CUDA device, else in Triton's CPU interpreter.

TRITON_INTERPRET is read when a kernel is decorated (``@triton.jit``), so it is set here, at collection,
before any test imports ``wfn_kernels.triton``. It stays set for the rest of the session, which only makes
the Triton backend report itself as available on CPU.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
torch.set_num_threads(1)
