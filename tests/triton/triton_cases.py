"""Shared helpers for the Triton tests: device choice and exactly-summable cases.

Importing this module (first thing in each Triton test module, so at collection, before any test imports
``wfn_kernels.ops.triton``) selects Triton's CPU interpreter when there is no GPU: TRITON_INTERPRET is read when
a kernel is decorated. It stays set for the session, which only makes the Triton backend report itself as
available on CPU. (Not a conftest.py: a second top-level ``conftest`` module would shadow tests/conftest.py,
which other test modules import by that name.)
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from wfn_kernels.format.packing import pack_codes


def triton_device() -> str:
    """'cuda' when there is a GPU; 'cpu' under the interpreter; skip otherwise (naming why)."""
    pytest.importorskip("triton", reason="triton is not installed")
    if torch.cuda.is_available():
        return "cuda"
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("no CUDA device and TRITON_INTERPRET is set to something other than 1")
    from triton.runtime.interpreter import InterpretedFunction

    from wfn_kernels.ops.triton import kernels

    if not isinstance(kernels.codebook_gemv_kernel, InterpretedFunction):
        pytest.fail("wfn_kernels.ops.triton was imported before TRITON_INTERPRET=1 was set (by tests/triton/"
                    "triton_cases.py at collection); something imported it earlier in this session")
    return "cpu"


def pow2_codebook(n: int, gen: torch.Generator) -> torch.Tensor:
    """n distinct sorted values from {0, +-2^e, e in [-4, 3]}: products with small integers are exact."""
    pool = torch.tensor([0.0] + [s * 2.0 ** e for e in range(-4, 4) for s in (1.0, -1.0)])
    return torch.sort(pool[torch.randperm(pool.numel(), generator=gen)[:n]]).values.float()


def exact_case(m, n, k, bits, dtype, gen, entries=None, device="cpu"):
    """(x, packed, codebook, bias, codes): small-integer x and bias, power-of-two codebook, so float32
    accumulation is exact in any order and every backend must agree bit for bit."""
    c = entries or min(1 << bits, 15)
    cb = pow2_codebook(c, gen)
    codes = torch.randint(0, c, (n, k), generator=gen)
    x = torch.randint(-3, 4, (m, k), generator=gen).to(dtype)
    bias = torch.randint(-4, 4, (n,), generator=gen).float()
    return x.to(device), pack_codes(codes, bits).to(device), cb.to(device), bias.to(device), codes
