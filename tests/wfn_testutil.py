"""Test helpers shared by the top-level tests (a unique module name: tests/fixing has its own conftest)."""
import torch


def pow2_codebook(n: int, gen=None) -> torch.Tensor:
    """n distinct values from {0, +-2^e}, sorted: exact in fp32 products with small integers."""
    pool = torch.tensor([0.0] + [s * 2.0 ** e for e in range(-4, 4) for s in (1.0, -1.0)])
    idx = torch.randperm(pool.numel(), generator=gen)[:n]
    return torch.sort(pool[idx]).values.float()
