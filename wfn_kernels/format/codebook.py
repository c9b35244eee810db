"""Codebooks of signed sums of powers of two.

A WFN network's weights all take values from one small set (the paper's cluster centres). Each centre
is an additive power-of-two value ``sum_j s_j * 2**e_j`` with at most ``max_terms`` terms (order + 1 in
the paper's words), so a multiply by it becomes ``max_terms`` shifts and adds. :class:`Codebook` holds
the sorted values and exposes those terms for the shift-add kernels and the simulator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

MAX_LOCAL_ENTRIES = 256  # 8-bit codes: the widest index the kernels read
DEFAULT_MAX_TERMS = 4  # WFN with delta ~ 0.01 reaches order <= 3, i.e. <= 4 terms (wfn-algorithm.md 2.4)


def power_of_two_terms(value: float) -> list[tuple[int, int]]:
    """Minimal signed power-of-two decomposition of a float (non-adjacent form of its mantissa).

    Returns ``[(sign, exponent), ...]`` with sign in {-1, +1}, exponents strictly decreasing, such that
    ``value == sum(sign * 2.0**exponent)`` exactly. The NAF has the fewest non-zero signed digits of any
    signed-binary representation, so ``len(result)`` is the value's minimal term count. Zero -> ``[]``.
    """
    if not math.isfinite(value):
        raise ValueError(f"power_of_two_terms: value {value!r} is not finite")
    if value == 0.0:
        return []
    sign = -1 if value < 0 else 1
    mantissa, exp = math.frexp(abs(value))  # abs(value) = mantissa * 2**exp, mantissa in [0.5, 1)
    m = int(mantissa * (1 << 53))  # exact: a float64 mantissa has 53 bits
    e = exp - 53
    terms = []
    while m:
        if m & 1:
            digit = 2 - (m & 3)  # +1 if m % 4 == 1 else -1
            m -= digit
            terms.append((sign * digit, e))
        m >>= 1
        e += 1
    return terms[::-1]


@dataclass(frozen=True)
class Codebook:
    """A sorted set of distinct finite values, each a signed sum of at most ``max_terms`` powers of two.

    ``values``: float32 tensor of shape (C,), strictly increasing, on CPU.
    ``signs``/``exponents``: int tensors of shape (C, max_terms); unused term slots have sign 0 and
    exponent 0. ``num_terms``: int tensor (C,), the term count of each value (0 for the value 0).
    ``max_entries``: size limit (256 for a per-layer codebook indexed by 8-bit codes; ``None`` for a
    whole-network codebook, which is only used for statistics and remapping).
    """

    values: torch.Tensor
    max_terms: int = DEFAULT_MAX_TERMS
    max_entries: int | None = MAX_LOCAL_ENTRIES
    signs: torch.Tensor = field(init=False, repr=False, compare=False)
    exponents: torch.Tensor = field(init=False, repr=False, compare=False)
    num_terms: torch.Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        values = _validated_values(self.values, self.max_entries)
        if not isinstance(self.max_terms, int) or self.max_terms < 1:
            raise ValueError(f"Codebook: max_terms must be a positive int, got {self.max_terms!r}")
        signs = torch.zeros(len(values), self.max_terms, dtype=torch.int8)
        exponents = torch.zeros(len(values), self.max_terms, dtype=torch.int16)
        counts = torch.zeros(len(values), dtype=torch.int8)
        for i, v in enumerate(values.tolist()):
            terms = power_of_two_terms(v)
            if len(terms) > self.max_terms:
                raise ValueError(
                    f"Codebook: value {v!r} (index {i}) is not a signed sum of at most {self.max_terms} "
                    f"powers of two: it needs {len(terms)} terms {_format_terms(terms)}"
                )
            for j, (s, e) in enumerate(terms):
                signs[i, j], exponents[i, j] = s, e
            counts[i] = len(terms)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "signs", signs)
        object.__setattr__(self, "exponents", exponents)
        object.__setattr__(self, "num_terms", counts)

    @classmethod
    def from_values(cls, values, max_terms: int = DEFAULT_MAX_TERMS,
                    max_entries: int | None = MAX_LOCAL_ENTRIES) -> Codebook:
        """Build from any iterable/tensor of distinct values (sorted here). Duplicates are rejected."""
        return cls(torch.as_tensor(values, dtype=torch.float64).flatten(), max_terms, max_entries)

    @classmethod
    def from_tensor(cls, tensor: torch.Tensor, max_terms: int = DEFAULT_MAX_TERMS,
                    max_entries: int | None = MAX_LOCAL_ENTRIES) -> Codebook:
        """The codebook of a tensor's unique values (e.g. a fixed layer's weights)."""
        return cls(torch.unique(tensor.detach().float().cpu()), max_terms, max_entries)

    def __len__(self) -> int:
        return int(self.values.numel())

    @property
    def order(self) -> int:
        """Highest order used (terms - 1); 0 means every non-zero value is a pure power of two."""
        return max(int(self.num_terms.max()) - 1, 0) if len(self) else 0

    @property
    def is_power_of_two(self) -> bool:
        """True when every value is 0 or +-2**e (an order-0 codebook: decode is an exponent add)."""
        return bool((self.num_terms <= 1).all())

    @property
    def index_bits(self) -> int:
        """Narrowest supported code width (2, 4 or 8 bits) that indexes every entry."""
        return bits_for_entries(len(self))

    def terms(self, index: int) -> list[tuple[int, int]]:
        """The (sign, exponent) terms of entry ``index``."""
        n = int(self.num_terms[index])
        return [(int(self.signs[index, j]), int(self.exponents[index, j])) for j in range(n)]

    def index_of(self, tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map a float tensor onto the codebook: (codes int64 same shape, mask of exact hits)."""
        flat = tensor.detach().float().cpu().reshape(-1)
        idx = torch.searchsorted(self.values, flat).clamp_(max=max(len(self) - 1, 0))
        hit = self.values[idx] == flat if len(self) else torch.zeros_like(flat, dtype=torch.bool)
        return idx.reshape(tensor.shape), hit.reshape(tensor.shape)

    def to_list(self) -> list[float]:
        return [float(v) for v in self.values.tolist()]


def bits_for_entries(n: int) -> int:
    """Code width for a codebook of n entries: 2 (<= 4), 4 (<= 16) or 8 (<= 256)."""
    for bits in (2, 4, 8):
        if n <= 1 << bits:
            return bits
    raise ValueError(f"a codebook of {n} entries needs more than 8-bit codes (at most 256 entries)")


def _validated_values(values, max_entries: int | None) -> torch.Tensor:
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"Codebook: values must be a tensor, got {type(values).__name__}")
    if values.dim() != 1:
        raise ValueError(f"Codebook: values must be 1-D, got shape {tuple(values.shape)}")
    if values.numel() == 0:
        raise ValueError("Codebook: values are empty; a codebook needs at least one entry")
    v64 = values.detach().to(torch.float64).cpu()
    bad = ~torch.isfinite(v64)
    if bad.any():
        raise ValueError(f"Codebook: values contain non-finite entries {v64[bad].tolist()} (NaN/Inf)")
    v32 = v64.to(torch.float32)
    inexact = v32.to(torch.float64) != v64
    if inexact.any():
        raise ValueError(f"Codebook: values {v64[inexact].tolist()[:5]} are not representable in float32")
    v32, _ = torch.sort(v32)
    dup = v32[1:] == v32[:-1]
    if dup.any():
        raise ValueError(f"Codebook: duplicate values {sorted(set(v32[1:][dup].tolist()))}")
    if max_entries is not None and v32.numel() > max_entries:
        raise ValueError(f"Codebook: {v32.numel()} entries exceed the limit of {max_entries}")
    return v32.contiguous()


def _format_terms(terms) -> str:
    return "[" + " ".join(f"{'+' if s > 0 else '-'}2^{e}" for s, e in terms) + "]"
