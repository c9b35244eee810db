"""wfn-kernels: Weight Fixing Networks, codebook-indexed kernels and a weight-reuse accelerator model."""

from .codebook import Codebook, power_of_two_terms
from .nn import ConversionReport, WFNConv2d, WFNLinear, convert, set_backend, weight_bytes
from .ops import Backend, BackendUnavailableError, available_backends, codebook_conv2d, codebook_linear
from .packing import PackedWeight, pack_codes, pack_weight, unpack_codes
from .shift_add import ShiftAddWeight, encode_shift_add, quantize_activations_int8, shift_add_linear
from .onednn import optimize_for_inference
from .serialization import CorruptFileError, load_packed, read_packed, save_packed

__all__ = [
    "Backend", "BackendUnavailableError", "Codebook", "ConversionReport", "CorruptFileError", "PackedWeight",
    "WFNConv2d", "WFNLinear", "available_backends", "codebook_conv2d", "codebook_linear", "convert",
    "load_packed", "pack_codes", "pack_weight", "power_of_two_terms", "read_packed", "save_packed",
    "set_backend", "unpack_codes", "weight_bytes", "ShiftAddWeight", "encode_shift_add",
    "quantize_activations_int8", "shift_add_linear", "optimize_for_inference",
]
__version__ = "0.1.0"
