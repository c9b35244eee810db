"""Bridges to other libraries' APIs. Imported on demand: ``wfn_kernels`` itself never imports them.

- ``torchao.py``: :class:`WFNQuantizeConfig`, so ``torchao.quantization.quantize_(model, WFNQuantizeConfig())``
  swaps eligible layers for WFN modules (and Hugging Face's ``TorchAoConfig`` can drive it). Needs the
  ``[torchao]`` extra.

May import: ``wfn_kernels.nn`` and below, and the library it bridges to.
"""


def __getattr__(name):
    if name in ("WFNQuantizeConfig", "wfn_filter_fn"):
        from . import torchao as _torchao

        return getattr(_torchao, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["WFNQuantizeConfig", "wfn_filter_fn"]
