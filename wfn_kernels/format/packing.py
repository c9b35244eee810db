"""Packed code format: 2/4/8-bit indices into a per-layer codebook.

Layout (the contract every kernel reads): codes of a (N, K) weight are a uint8 tensor of shape
(N, row_bytes) with ``row_bytes = ceil(K * bits / 8)``; rows are padded to whole bytes with zero codes.
Within a byte, element ``k`` of a row sits at bits ``(k * bits) % 8`` upward (little-endian order: for
4-bit codes element 2j is the low nibble of byte j and element 2j+1 the high nibble).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .codebook import Codebook, bits_for_entries

SUPPORTED_BITS = (2, 4, 8)


def row_bytes(in_features: int, bits: int) -> int:
    """Bytes per packed row of ``in_features`` codes at ``bits`` bits."""
    _check_bits(bits)
    return (in_features * bits + 7) // 8


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer codes of shape (N, K), each in [0, 2**bits), into uint8 of shape (N, row_bytes)."""
    _check_bits(bits)
    if codes.dim() != 2:
        raise ValueError(f"pack_codes: codes must be 2-D (N, K), got shape {tuple(codes.shape)}")
    if codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise TypeError(f"pack_codes: codes must be an integer tensor, got {codes.dtype}")
    n, k = codes.shape
    c = codes.to(torch.int64)
    if c.numel() and (c.min() < 0 or c.max() >= 1 << bits):
        raise ValueError(f"pack_codes: codes must lie in [0, {1 << bits}) for {bits}-bit packing, "
                         f"got range [{int(c.min())}, {int(c.max())}]")
    per_byte = 8 // bits
    nbytes = row_bytes(k, bits)
    padded = torch.zeros(n, nbytes * per_byte, dtype=torch.int64, device=codes.device)
    padded[:, :k] = c
    padded = padded.view(n, nbytes, per_byte)
    shifts = torch.arange(per_byte, device=codes.device, dtype=torch.int64) * bits
    return (padded << shifts).sum(-1).to(torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int, in_features: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: uint8 (N, row_bytes) -> int64 codes (N, in_features)."""
    _check_bits(bits)
    if packed.dtype != torch.uint8 or packed.dim() != 2:
        raise ValueError(f"unpack_codes: packed must be a 2-D uint8 tensor, got {packed.dtype} "
                         f"of shape {tuple(packed.shape)}")
    if packed.shape[1] != row_bytes(in_features, bits):
        raise ValueError(f"unpack_codes: packed rows have {packed.shape[1]} bytes, expected "
                         f"{row_bytes(in_features, bits)} for in_features={in_features} at {bits} bits")
    per_byte = 8 // bits
    shifts = torch.arange(per_byte, device=packed.device, dtype=torch.int64) * bits
    codes = (packed.to(torch.int64).unsqueeze(-1) >> shifts) & ((1 << bits) - 1)
    return codes.reshape(packed.shape[0], -1)[:, :in_features]


@dataclass(frozen=True)
class PackedWeight:
    """A weight of shape ``shape`` (first dim N = out features, the rest flattened to K).

    ``packed``: uint8 (N, row_bytes); ``codebook``: the layer's local float32 codebook values (C,);
    ``global_index``: int64 (C,), position of each local value in the whole-network codebook (or None).
    """

    packed: torch.Tensor
    codebook: torch.Tensor
    bits: int
    shape: tuple[int, ...]
    global_index: torch.Tensor | None = None

    @property
    def in_features(self) -> int:
        k = 1
        for s in self.shape[1:]:
            k *= s
        return k

    def unpack(self) -> torch.Tensor:
        """The dense float32 weight, exactly (codebook[codes])."""
        codes = unpack_codes(self.packed, self.bits, self.in_features)
        return self.codebook[codes].reshape(self.shape)

    def nbytes(self) -> int:
        """Bytes of packed codes plus the local codebook (fp32)."""
        return self.packed.numel() + 4 * self.codebook.numel()


def pack_weight(weight: torch.Tensor, global_codebook: Codebook, name: str = "weight") -> PackedWeight:
    """Pack a weight whose every value lies in ``global_codebook`` (exactly).

    The local codebook is the subset of global entries the layer uses, so the index is as narrow as
    possible (2, 4 or 8 bits). Raises ValueError naming ``name`` and how many weights are off, and by
    how much, when some value is not in the codebook.
    """
    idx, hit = global_codebook.index_of(weight)
    if not bool(hit.all()):
        w = weight.detach().float().cpu().reshape(-1)
        miss = ~hit.reshape(-1)
        off = w[miss]
        nearest = nearest_distance(off, global_codebook.values)
        raise ValueError(
            f"{name}: {int(miss.sum())} of {w.numel()} weights are not on the codebook "
            f"({len(global_codebook)} values); largest distance to the nearest value {float(nearest.max()):.3g}, "
            f"e.g. {off[:3].tolist()}")
    used, local = torch.unique(idx.reshape(-1), return_inverse=True)
    if used.numel() > 256:
        raise ValueError(f"{name}: uses {used.numel()} distinct values; a layer codebook holds at most 256")
    bits = bits_for_entries(used.numel())
    n = weight.shape[0]
    packed = pack_codes(local.reshape(n, -1), bits)
    return PackedWeight(packed, global_codebook.values[used].clone(), bits, tuple(weight.shape), used)


def nearest_distance(x: torch.Tensor, sorted_values: torch.Tensor) -> torch.Tensor:
    """Absolute distance from each element of x to the nearest of ``sorted_values`` (O(n log C))."""
    pos = torch.searchsorted(sorted_values, x)
    lo = sorted_values[(pos - 1).clamp(min=0)]
    hi = sorted_values[pos.clamp(max=sorted_values.numel() - 1)]
    return torch.minimum((x - lo).abs(), (x - hi).abs())


def _check_bits(bits: int) -> None:
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {bits!r}")
