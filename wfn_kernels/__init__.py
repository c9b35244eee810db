"""wfn-kernels: Weight Fixing Networks, codebook-indexed kernels and a weight-reuse accelerator model.

Layers, lowest first (each may import only the ones above it; docs/design.md has the map):

- ``wfn_kernels.format``: codebooks, code packing, the packed-model file.
- ``wfn_kernels.ops``: the ``wfn::*`` ops, backend dispatch, reference spec, shift-add, Triton
  (C++/CUDA kernels in ``csrc/``, loaded as ``wfn_kernels._C``).
- ``wfn_kernels.nn``: ``WFNLinear`` / ``WFNConv2d``, ``convert``, CPU layouts, save/load.
- ``wfn_kernels.fixing``: the WFN algorithm (clustering, regulariser, trainer, metrics, baselines).
- ``wfn_kernels.integrations``: torchao's ``quantize_`` API.
- ``wfn_kernels.workflows``: demo, datasets, bundled models, training, the ``wfn`` CLI.

The simulator is the separate package ``wfn_sim`` (``sim/``).
"""

from .format import (Codebook, CorruptFileError, PackedWeight, pack_codes, pack_weight, power_of_two_terms,
                     read_packed, unpack_codes)
from .nn import (ConversionReport, WFNConv2d, WFNLinear, convert, fuse_batchnorm, load_packed,
                 optimize_for_inference, save_packed,
                 set_backend, set_compute, weight_bytes)
from .ops import Backend, BackendUnavailableError, available_backends, codebook_conv2d, codebook_linear
from .ops.shift_add import ShiftAddWeight, encode_shift_add, quantize_activations_int8, shift_add_linear

__all__ = [
    "Backend", "BackendUnavailableError", "Codebook", "ConversionReport", "CorruptFileError", "PackedWeight",
    "WFNConv2d", "WFNLinear", "available_backends", "codebook_conv2d", "codebook_linear", "convert", "fuse_batchnorm",
    "load_packed", "pack_codes", "pack_weight", "power_of_two_terms", "read_packed", "save_packed",
    "set_backend", "set_compute", "unpack_codes", "weight_bytes", "ShiftAddWeight", "encode_shift_add",
    "quantize_activations_int8", "shift_add_linear", "optimize_for_inference",
]
__version__ = "0.1.0"
