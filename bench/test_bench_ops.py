"""pytest-benchmark suite: `pytest bench/ --benchmark-only`. Correctness is asserted before timing; the
dense fp32 baseline of each shape is a benchmark of its own in the same session (group = shape)."""
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cases import pow2_codebook  # noqa: E402

import wfn_kernels as wk  # noqa: E402
from wfn_kernels.ops import reference  # noqa: E402

SHAPES = [(1, 4096, 4096), (1, 8192, 8192), (16, 4096, 4096), (256, 4096, 4096)]
BACKENDS = [b for b in ("extension", "triton") if wk.available_backends()[b]["available"]
            and (b != "triton" or torch.cuda.is_available())]


def _case(m, n, k, bits):
    g = torch.Generator().manual_seed(0)
    cb = pow2_codebook(bits)
    packed = wk.pack_codes(torch.randint(0, cb.numel(), (n, k), generator=g), bits)
    return torch.randn(m, k, generator=g), packed, cb


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "M{}_N{}_K{}".format(*s))
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("backend", BACKENDS)
def test_wfn_linear(benchmark, shape, bits, backend):
    m, n, k = shape
    benchmark.group = f"M{m} N{n} K{k}"
    x, packed, cb = _case(m, n, k, bits)
    y = wk.codebook_linear(x, packed, cb, bits, backend=backend)
    torch.testing.assert_close(y, reference.codebook_linear(x, packed, cb, bits, k), rtol=1e-4, atol=1e-3)
    benchmark(wk.codebook_linear, x, packed, cb, bits, backend=backend, validate=False)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "M{}_N{}_K{}".format(*s))
def test_dense_fp32(benchmark, shape):
    m, n, k = shape
    benchmark.group = f"M{m} N{n} K{k}"
    w, x = torch.randn(n, k), torch.randn(m, k)
    benchmark(F.linear, x, w)
