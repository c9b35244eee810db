"""``optimize_for_inference``: pick, per conv layer and measured, the faster CPU weight layout."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..ops.reference import memory_format_of
from ..timing import interleaved_medians
from .modules import WFNConv2d


def optimize_for_inference(model: nn.Module, example_input: torch.Tensor, measure: bool = True,
                           repeats: int = 15) -> list[tuple[str, str]]:
    """Store every ``WFNConv2d``'s codes in oneDNN's blocked order for the shapes ``example_input`` gives.

    Runs one forward pass (no grad) to see each conv's input shape. Afterwards a forward pass with fp32
    CPU inputs of those shapes (or any shape for which oneDNN picks the same order) and no autograd runs
    decode-into-oneDNN + conv without a weight reorder; any other call takes the plain path and is still
    correct. ``state_dict()``, ``codes()``, ``save_packed`` see canonical codes.

    ``measure=True`` (default) times each layer both ways (with any folded BatchNorm / ReLU, see
    :func:`~wfn_kernels.fuse_batchnorm`) on a random input of its shape and memory format (medians of
    ``repeats`` interleaved calls) and keeps the oneDNN layout only where it is faster: on tiny convs the
    extra call overhead outweighs the saved reorder. Returns ``[(layer name, 'optimized ...' or the
    reason it was left alone)]``.
    """
    shapes, formats, hooks = {}, {}, []

    def record(name):
        def hook(_module, inputs, _output):
            shapes.setdefault(name, tuple(inputs[0].shape))  # returns None: the output is left alone
            formats.setdefault(name, memory_format_of(inputs[0]))
        return hook

    for name, mod in model.named_modules():
        if isinstance(mod, WFNConv2d):
            hooks.append(mod.register_forward_hook(record(name)))
    if not hooks:
        return []
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for h in hooks:
            h.remove()
    result = []
    for name, mod in model.named_modules():
        if isinstance(mod, WFNConv2d):
            if name not in shapes:
                result.append((name, "not called by the example forward pass"))
                continue
            if not measure:
                why = mod.use_onednn_layout(shapes[name])
                result.append((name, why or "optimized"))
                continue
            trial = copy.deepcopy(mod)
            why = trial.use_onednn_layout(shapes[name])
            if why:
                result.append((name, why))
                continue
            x = torch.randn(shapes[name]).contiguous(memory_format=formats[name])  # the layout the model runs
            with torch.no_grad():
                t_plain, t_opt = interleaved_medians([lambda: mod(x), lambda: trial(x)], repeats)
            if t_opt < t_plain:
                mod.use_onednn_layout(shapes[name])
                result.append((name, f"optimized ({1e3 * t_plain:.3f} -> {1e3 * t_opt:.3f} ms)"))
            else:
                result.append((name, f"kept the plain layout: the oneDNN layout measured slower here "
                                     f"({1e3 * t_opt:.3f} vs {1e3 * t_plain:.3f} ms)"))
    return result
