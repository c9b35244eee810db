"""Drop-in modules: ``WFNLinear`` / ``WFNConv2d``, ``convert()``, CPU inference layouts, model files.

- ``modules.py``: the two modules (packed codes + local codebook as buffers; forward calls the ops).
- ``convert.py``: ``convert(model)`` and its report, ``set_backend``, ``weight_bytes``.
- ``io.py``: ``save_packed`` / ``load_packed`` (whole models, through ``wfn_kernels.format.container``).
- ``onednn_layout.py`` + ``inference.py``: ``optimize_for_inference`` (codes stored in oneDNN's order).
- ``fuse.py`` + ``epilogue.py``: ``fuse_batchnorm(model)`` (eval BatchNorm + ReLU folded into the conv's output epilogue).
- ``torch_internals.py``: every private torch API the package touches, behind a version check.

May import: ``wfn_kernels.ops``, ``wfn_kernels.format``, ``wfn_kernels.timing``. Never workflows/fixing.
"""

from .convert import ConversionReport, convert, set_backend, set_compute, weight_bytes, wfn_modules
from .fuse import fuse_batchnorm
from .inference import optimize_for_inference
from .io import load_packed, save_packed
from .modules import WFNConv2d, WFNLinear

__all__ = ["ConversionReport", "WFNConv2d", "WFNLinear", "convert", "fuse_batchnorm", "load_packed", "optimize_for_inference",
           "save_packed", "set_backend", "set_compute", "weight_bytes", "wfn_modules"]
