"""Baseline quantisers WFN is compared with, run on the same models and parameter sets.

- ``apot.py``: Additive Powers-of-Two quantisation (Li et al., ICLR 2020) with a learned clipping scale.
"""

from .apot import apot_levels, apot_quantize

__all__ = ["apot_levels", "apot_quantize"]
