"""The packed format: power-of-two codebooks, 2/4/8-bit code packing, and the packed-model file.

- ``codebook.py``: :class:`Codebook` (sorted signed sums of powers of two) and ``power_of_two_terms``.
- ``packing.py``: ``pack_codes`` / ``unpack_codes`` / ``pack_weight`` and :class:`PackedWeight`.
- ``container.py``: the safetensors file (header, checksums, ``read_packed``, ``decoded_weights``).

docs/packed-format.md specifies the format. May import: torch, numpy, safetensors. Nothing else of
wfn_kernels: everything else builds on this layer, and the simulator (``wfn_sim``) reads files through it.
"""

from .codebook import Codebook, power_of_two_terms
from .container import CorruptFileError, decoded_weights, is_packed_file, read_packed, write_packed_file
from .packing import PackedWeight, pack_codes, pack_weight, unpack_codes

__all__ = ["Codebook", "CorruptFileError", "PackedWeight", "decoded_weights", "is_packed_file", "pack_codes",
           "pack_weight", "power_of_two_terms", "read_packed", "unpack_codes", "write_packed_file"]
