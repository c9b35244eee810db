"""``optimize_for_inference``: pick, per conv layer and measured, the faster CPU weight layout."""

from __future__ import annotations

import copy
import numbers

import torch
from torch import nn

from ..ops.reference import memory_format_of
from ..timing import interleaved_medians
from . import onednn_layout
from . import torch_internals as ti
from .modules import WFNConv2d


def optimize_for_inference(model: nn.Module, example_input: torch.Tensor, measure: bool = True,
                           repeats: int = 15, max_workspace_bytes: int | None = None) -> list[tuple[str, str]]:
    """Store every ``WFNConv2d``'s codes in oneDNN's blocked order for the shapes ``example_input`` gives.

    Runs one forward pass (no grad) to see each conv's input shape. Afterwards a forward pass with fp32
    CPU inputs of those shapes (or any shape for which oneDNN picks the same order) and no autograd runs
    decode-into-oneDNN + conv without a weight reorder; any other call takes the plain path and is still
    correct. ``state_dict()``, ``codes()``, ``save_packed`` see canonical codes.

    ``measure=True`` (default) times each layer both ways (with any folded BatchNorm / ReLU, see
    :func:`~wfn_kernels.fuse_batchnorm`) on a random input of its shape and memory format (medians of
    ``repeats`` interleaved calls) and keeps the oneDNN layout only where it is faster: on tiny convs the
    extra call overhead outweighs the saved reorder.

    Each optimized conv signature holds one fp32 weight in oneDNN's layout as its decode workspace.
    ``max_workspace_bytes`` caps their sum: the signatures that save the most time per workspace byte
    (measured; with ``measure=False``, in model order) are taken while they fit, the others keep the plain
    layout, whose decode workspace is a block of at most ``WFN_CONV_TILE_BYTES`` shared by every layer.
    ``None`` (default): no cap. Returns ``[(layer name, 'optimized ...' or the reason it was left alone)]``.
    """
    if max_workspace_bytes is not None and (isinstance(max_workspace_bytes, bool)
                                            or not isinstance(max_workspace_bytes, numbers.Integral)
                                            or max_workspace_bytes < 0):
        raise ValueError(f"max_workspace_bytes must be None or a byte count >= 0, got {max_workspace_bytes!r}")
    shapes, formats = _conv_inputs(model, example_input)
    if shapes is None:
        return []
    workspaces_before = set(onednn_layout._workspaces())
    result, wins = {}, []  # wins: (name, module, saved seconds or None, workspace key, workspace bytes)
    for name, mod in model.named_modules():
        if not isinstance(mod, WFNConv2d):
            continue
        if name not in shapes:
            result[name] = "not called by the example forward pass"
            continue
        win, why = _try_layer(mod, shapes[name], formats[name], measure, repeats)
        if win is None:
            result[name] = why
        else:
            wins.append((name, mod) + win)
    chosen = _within_budget(wins, max_workspace_bytes, measure)
    for name, mod, times, key, nbytes in wins:
        if key in chosen:
            mod.use_onednn_layout(shapes[name])
            result[name] = "optimized" if times is None else f"optimized ({1e3 * times[0]:.3f} -> {1e3 * times[1]:.3f} ms)"
        else:
            mod.use_plain_layout()  # (a layer optimized by an earlier call goes back)
            result[name] = (f"kept the plain layout: its oneDNN workspace ({nbytes} bytes) does not fit "
                            f"max_workspace_bytes={max_workspace_bytes} after the layers that save more per byte")
    # probes of layers left alone made workspaces nobody will use: drop them
    ws = onednn_layout._workspaces()
    for key in set(ws) - workspaces_before - chosen:
        del ws[key]
    return [(name, result[name]) for name, mod in model.named_modules() if name in result]


def _conv_inputs(model: nn.Module, example_input: torch.Tensor):
    """({conv name: input shape}, {conv name: memory format}) from one no-grad forward pass; (None, None) when
    the model has no WFNConv2d."""
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
        return None, None
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for h in hooks:
            h.remove()
    return shapes, formats


def _try_layer(mod: WFNConv2d, shape, memory_format, measure: bool, repeats: int):
    """((saved (t_plain, t_opt) or None, workspace key, bytes), '') when the oneDNN layout applies (and, measured,
    is faster) on a copy of ``mod``; else (None, why not). ``mod`` itself is left as it is."""
    trial = copy.deepcopy(mod)
    why = trial.use_onednn_layout(shape)
    if why:
        return None, why
    key, nbytes = _workspace_of(trial, shape)
    if not measure:
        return (None, key, nbytes), ""
    x = torch.randn(shape).contiguous(memory_format=memory_format)  # the layout the model runs
    with torch.no_grad():
        t_plain, t_opt = interleaved_medians([lambda: mod(x), lambda: trial(x)], repeats)
    if t_opt < t_plain:
        return ((t_plain, t_opt), key, nbytes), ""
    return None, (f"kept the plain layout: the oneDNN layout measured slower here "
                  f"({1e3 * t_opt:.3f} vs {1e3 * t_plain:.3f} ms)")


def _workspace_of(trial: WFNConv2d, input_shape) -> tuple[tuple, int]:
    """(workspace key, bytes) of a conv just put on the oneDNN layout (shared by convs of one signature)."""
    plan = trial._onednn
    sig = plan["shapes"][tuple(int(v) for v in input_shape)]
    key = onednn_layout._workspace_key(sig, plan["layout"])
    return key, int(ti.mkldnn_buffer(onednn_layout.workspace(sig, plan["layout"]))[1])


def _within_budget(wins, budget: int | None, measured: bool) -> set:
    """Workspace keys to optimize: all without a budget; else by time saved per byte (model order when not
    measured), each key's bytes counted once however many layers share it."""
    keys = list(dict.fromkeys(k for *_, k, _ in wins))
    if budget is None:
        return set(keys)
    nbytes = {k: b for *_, k, b in wins}
    if measured:
        saved = {k: 0.0 for k in keys}
        for _, _, times, k, _ in wins:
            saved[k] += times[0] - times[1]
        keys.sort(key=lambda k: saved[k] / max(nbytes[k], 1), reverse=True)
    chosen, used = set(), 0
    for k in keys:
        if used + nbytes[k] <= budget:
            chosen.add(k)
            used += nbytes[k]
    return chosen
