"""Test helpers shared by the top-level tests (a unique module name: tests/fixing has its own conftest)."""
import torch
from torch import nn


def pow2_codebook(n: int, gen=None) -> torch.Tensor:
    """n distinct values from {0, +-2^e}, sorted: exact in fp32 products with small integers."""
    pool = torch.tensor([0.0] + [s * 2.0 ** e for e in range(-4, 4) for s in (1.0, -1.0)])
    idx = torch.randperm(pool.numel(), generator=gen)[:n]
    return torch.sort(pool[idx]).values.float()


def round_to_power_of_two_sums(model: nn.Module, max_terms: int = 2, zero_threshold: float = 2 ** -7) -> None:
    """Round every Linear/Conv2d weight (in place) to the nearest value with <= ``max_terms`` signed power
    -of-two terms (greedy: take the nearest power of two in log2, then of the residual), zeroing
    magnitudes below ``zero_threshold``. No retraining: a quick way to make test models that lie on a
    power-of-two codebook (the demo itself runs the real WFN algorithm)."""
    with torch.no_grad():
        for mod in model.modules():
            if type(mod) in (nn.Linear, nn.Conv2d):
                w = mod.weight
                out = torch.zeros_like(w)
                resid = torch.where(w.abs() < zero_threshold, torch.zeros_like(w), w)
                for _ in range(max_terms):
                    mag = resid.abs()
                    term = resid.sign() * torch.exp2(torch.round(torch.log2(mag.clamp_min(zero_threshold / 2))))
                    keep = mag >= zero_threshold / 2
                    out += torch.where(keep, term, torch.zeros_like(term))
                    resid = w - out
                w.copy_(out)


def run_bench(name: str, argv: list[str]):
    """Run bench/<name> in a real subprocess (from bench/, as its imports expect); returns the CompletedProcess."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / name
    return subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True, timeout=300,
                          cwd=script.parent)
