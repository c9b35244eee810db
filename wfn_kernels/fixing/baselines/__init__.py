"""Baseline quantisers WFN is compared with, run on the same models, counted on the same parameter sets
(fixing.metrics.count_values) and fine-tuned with the same straight-through loop (``_ste.py``).

- ``apot.py``: Additive Powers-of-Two quantisation (Li et al., ICLR 2020), 3/4/5-bit levels, a per-layer
  clipping scale fitted by MSE;
- ``uniform.py``: symmetric per-output-channel uniform quantisation (what int4/int8 weight-only kernels
  store), MSE-fitted per-channel scales.
"""

from .apot import apot_attach, apot_levels, apot_quantize
from .uniform import uniform_attach, uniform_quantize

__all__ = ["apot_attach", "apot_levels", "apot_quantize", "uniform_attach", "uniform_quantize"]
