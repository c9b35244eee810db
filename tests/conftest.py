import os

import pytest
import torch

# The machine has 2 cores; tests that do not measure threading use one.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(1234)


def pow2_codebook(n: int, gen=None) -> torch.Tensor:
    """n distinct values from {0, +-2^e}, sorted: exact in fp32 products with small integers."""
    pool = torch.tensor([0.0] + [s * 2.0 ** e for e in range(-4, 4) for s in (1.0, -1.0)])
    idx = torch.randperm(pool.numel(), generator=gen)[:n]
    return torch.sort(pool[idx]).values.float()
