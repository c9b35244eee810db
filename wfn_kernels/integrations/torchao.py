"""torchao's ``quantize_`` API for WFN models.

    from torchao.quantization import quantize_
    from wfn_kernels.integrations import WFNQuantizeConfig, wfn_filter_fn

    quantize_(model, WFNQuantizeConfig())                    # nn.Linear layers (torchao's default filter)
    quantize_(model, WFNQuantizeConfig(), filter_fn=wfn_filter_fn)   # nn.Linear and nn.Conv2d

Each selected layer becomes a ``WFNLinear`` / ``WFNConv2d`` exactly as :func:`wfn_kernels.convert` builds
it. torchao calls the handler one module at a time, so with ``codebook=None`` each layer packs onto its own
unique values (the per-layer local codebook ``convert`` would give it; ``global_index`` is unknown, -1). Pass
the whole-network ``codebook`` (``convert(...).codebook`` or ``Codebook.from_values``) to keep it.

A selected layer whose weights are not on a power-of-two codebook raises ValueError (``strict=True``, the
default) or is left as it is (``strict=False``). Weights must already be WFN-fixed: this is packing, not
quantisation (``wfn_kernels.fixing.fix_weights`` does the fixing).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .._optional import require
from ..format.codebook import DEFAULT_MAX_TERMS, Codebook
from ..nn.convert import convert_module

require("torchao", "wfn_kernels.integrations.torchao")

from torchao.core.config import AOBaseConfig  # noqa: E402
from torchao.quantization.transform_module import register_quantize_module_handler  # noqa: E402


def wfn_filter_fn(module: nn.Module, fqn: str) -> bool:
    """torchao filter selecting every ``nn.Linear`` and ``nn.Conv2d`` (torchao's default takes Linear only)."""
    return type(module) in (nn.Linear, nn.Conv2d)


@dataclass
class WFNQuantizeConfig(AOBaseConfig):
    """Pack few-value weights into WFN modules through ``torchao.quantization.quantize_``.

    ``codebook``: whole-network codebook (None: each layer's own unique values). ``max_terms``: most
    power-of-two terms per value. ``backend`` / ``shift_add``: as in :func:`wfn_kernels.convert`.
    ``strict``: raise on a layer that cannot be packed (False: leave it as it is).
    """

    codebook: Codebook | None = None
    max_terms: int = DEFAULT_MAX_TERMS
    backend: str = "auto"
    shift_add: bool = False
    strict: bool = True


@register_quantize_module_handler(WFNQuantizeConfig)
def _wfn_transform(module: nn.Module, config: WFNQuantizeConfig) -> nn.Module:
    name = f"{type(module).__name__}{tuple(module.weight.shape)}" if hasattr(module, "weight") else type(module).__name__
    try:
        if type(module) not in (nn.Linear, nn.Conv2d):
            raise ValueError(f"{name}: WFNQuantizeConfig packs nn.Linear and nn.Conv2d only")
        codebook = config.codebook
        if codebook is None:
            values = torch.unique(module.weight.detach().float().cpu())
            try:
                codebook = Codebook(values, max_terms=config.max_terms)
            except ValueError as exc:
                raise ValueError(f"{name}: weights are not on a power-of-two codebook: {exc}") from None
        new, _ = convert_module(module, codebook, name, backend=config.backend, shift_add=config.shift_add)
    except ValueError as exc:
        if config.strict:
            raise ValueError(f"WFNQuantizeConfig: {exc}") from None
        return module
    return new
