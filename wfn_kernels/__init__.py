"""wfn-kernels: Weight Fixing Networks, codebook-indexed kernels and a weight-reuse accelerator model."""

from .codebook import Codebook, power_of_two_terms
from .ops import Backend, BackendUnavailableError, available_backends, codebook_conv2d, codebook_linear
from .packing import PackedWeight, pack_codes, pack_weight, unpack_codes

__all__ = [
    "Backend", "BackendUnavailableError", "Codebook", "PackedWeight", "available_backends",
    "codebook_conv2d", "codebook_linear", "pack_codes", "pack_weight", "power_of_two_terms", "unpack_codes",
]
__version__ = "0.1.0"
