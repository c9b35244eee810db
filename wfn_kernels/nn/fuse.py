"""Fold each eval-mode BatchNorm2d that follows a ``WFNConv2d`` (and a ReLU right after it) into the conv's
output epilogue, as inference compilers fold Conv-BN-ReLU.

The conv's weights stay the few WFN values: BatchNorm becomes a per-channel affine on the conv's output,
``y * a[c] + b[c]`` with ``a = gamma / sqrt(running_var + eps)`` and ``b = beta - running_mean * a``
(computed in float64, stored in float32), then ``max(y, 0)`` for a folded ReLU. In the int8 mode the
channels_last kernel applies it to the output still in registers, which saves the BatchNorm and ReLU passes
over every activation. In the float mode, a conv on the oneDNN layout (``wk.optimize_for_inference``, run
after fusing) scales each channel's weights by ``a`` as it decodes them, adds ``b`` through the conv's bias
and runs the ReLU as oneDNN's post-op, as frozen fp32 models fold BatchNorm into their weights; elsewhere it
runs as separate passes. The values differ from conv -> BatchNorm -> ReLU only by float rounding
(BatchNorm's own formula rounds differently).

The model is traced with ``torch.fx`` (the result is a ``GraphModule``; the model passed in is not changed).
Inference only: a module with a folded epilogue refuses ``state_dict()``, so save the model before fusing.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import fx, nn

from .modules import WFNConv2d, WFNLinear

_RELU_FUNCTIONS = (torch.relu, F.relu, torch.relu_)


class _Tracer(fx.Tracer):
    """WFN modules are leaves (their forward branches on the input's type and layout)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (WFNConv2d, WFNLinear)) or super().is_leaf_module(m, qualname)


def _is_relu(node: fx.Node, modules: dict) -> bool:
    if node.op == "call_module":
        return type(modules.get(node.target)) is nn.ReLU
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS
    return node.op == "call_method" and node.target in ("relu", "relu_")


def fuse_batchnorm(model: nn.Module, *, relu: bool = True) -> fx.GraphModule:
    """A traced copy of ``model`` with every ``WFNConv2d -> BatchNorm2d [-> ReLU]`` chain folded into the conv
    (see the module docstring). A conv whose output has other users, or a BatchNorm without running
    statistics, is left as it is. ``fused.wfn_fused`` lists the folded chains (conv name, BatchNorm name, relu)."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"fuse_batchnorm needs an nn.Module, got {type(model).__name__}")
    if model.training:
        raise ValueError("fuse_batchnorm folds BatchNorm's running statistics, an inference transform: call "
                         "model.eval() first")
    model = copy.deepcopy(model)
    try:
        gm = fx.GraphModule(model, _Tracer().trace(model))
    except Exception as exc:  # noqa: BLE001 (torch.fx raises many types; the message names the cause)
        raise ValueError(f"fuse_batchnorm traces the model with torch.fx and could not: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:300]}") from exc
    modules = dict(gm.named_modules())
    fused = []
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or type(modules.get(node.target)) is not nn.BatchNorm2d:
            continue
        src = node.args[0] if node.args else None
        if not (isinstance(src, fx.Node) and src.op == "call_module"
                and isinstance(modules.get(src.target), WFNConv2d) and len(src.users) == 1):
            continue
        conv, bn = modules[src.target], modules[node.target]
        if conv._has_post() or bn.running_mean is None or bn.running_var is None:
            continue
        with torch.no_grad():
            a = (bn.running_var.double() + bn.eps).rsqrt()
            if bn.weight is not None:
                a = a * bn.weight.double()
            b = -bn.running_mean.double() * a
            if bn.bias is not None:
                b = b + bn.bias.double()
        user = next(iter(node.users)) if len(node.users) == 1 else None
        fold_relu = relu and user is not None and _is_relu(user, modules)
        conv.fold_post(a.float(), b.float(), fold_relu)
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
        if fold_relu:
            user.replace_all_uses_with(src)
            gm.graph.erase_node(user)
        fused.append((src.target, node.target, fold_relu))
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    gm.wfn_fused = fused
    return gm
