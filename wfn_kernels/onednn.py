"""Inference layout for WFNConv2d on CPU: codes stored in oneDNN's blocked weight order.

torch's fp32 ``conv2d`` on CPU hands its plain OIHW weight to oneDNN, which reorders it into a blocked
layout (for example ``[O/32][kh][kw][I][32o]``) on every call. At batch 1 that reorder is a large part
of the conv's time (bench/results: 13-93 % on ResNet-18's layers), and an unprepared WFNConv2d pays it
too, after decoding. :func:`optimize_for_inference` instead stores each conv layer's codes in the blocked
order oneDNN chose, so a forward pass decodes them straight into a reused oneDNN weight tensor (reading
4-8x fewer bytes than an fp32 reorder) and runs the conv without any reorder.

How the layout is found: a probe weight whose elements are 1..n is reordered by oneDNN itself
(``torch._C._nn.mkldnn_reorder_conv2d_weight``); its raw buffer gives the permutation, which must have
the form ``element (ob, j, o) <- weight row ob*B + o, column colperm[j]`` with no padding (``B`` output
channels innermost). Anything else (grouped convs, padded layouts, other builds) is reported and the layer
keeps the plain path. Codes are permuted, never changed: ``state_dict()``, ``codes()`` and saved files
stay in the canonical row order.

Costs: one oneDNN weight tensor per distinct (weight shape, conv geometry, input shape) and thread, as
decode workspace (``workspace_bytes()``), on top of the packed codes.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

_WORKSPACES = threading.local()
MAX_ROW_ELEMS = 16384  # decode rows of at most this many codes, so small layers still split across threads


@dataclass(frozen=True)
class Layout:
    """oneDNN's blocked order for one conv weight: ``block`` output channels innermost, columns in
    ``colperm`` order (a tuple of K canonical column indices), ``rows`` >= O output channels."""

    block: int
    colperm: tuple
    rows: int  # output channels rounded up to whole blocks (oneDNN pads the last block with zero weights)

    def row_elems(self, k: int) -> int:
        """Codes per packed row in blocked storage: block * (largest divisor d of K with block*d <= MAX)."""
        d = max(d for d in range(1, k + 1) if k % d == 0 and (self.block * d <= MAX_ROW_ELEMS or d == 1))
        return self.block * d


def unavailable_reason() -> str:
    """'' when the oneDNN path can run here, else why not."""
    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN (mkldnn)"
    for name in ("data_ptr", "_nbytes", "_convolution_pointwise"):
        if not hasattr(torch.ops.mkldnn, name):
            return f"torch.ops.mkldnn.{name} is missing in torch {torch.__version__}"
    from . import ops

    if ops._C is None:
        return f"the C++ extension is not loaded: {ops._C_REASON}"
    if not hasattr(torch.ops.wfn_cpu, "decode_into_mkldnn"):
        return "the C++ extension predates decode_into_mkldnn; rebuild it"
    return ""


def _signature(weight_shape, stride, padding, dilation, groups, input_shape) -> tuple:
    return (tuple(weight_shape), tuple(stride), tuple(padding), tuple(dilation), int(groups), tuple(input_shape))


def _reorder(weight: torch.Tensor, sig: tuple) -> torch.Tensor:
    _, stride, padding, dilation, groups, input_shape = sig
    return torch._C._nn.mkldnn_reorder_conv2d_weight(weight.to_mkldnn(), list(padding), list(stride),
                                                     list(dilation), groups, list(input_shape))


def probe_layout(weight_shape, stride, padding, dilation, groups, input_shape) -> tuple[Layout | None, str]:
    """(Layout, '') of oneDNN's weight order for this conv, or (None, reason)."""
    reason = unavailable_reason()
    if reason:
        return None, reason
    o, k = int(weight_shape[0]), int(np.prod(weight_shape[1:]))
    n = o * k
    if groups != 1:
        return None, f"groups={groups}: grouped convs use a different oneDNN layout"
    if n >= 1 << 24:
        return None, f"{n} weights: too many for an exact fp32 probe (at most 2**24)"
    sig = _signature(weight_shape, stride, padding, dilation, groups, input_shape)
    probe = _reorder((torch.arange(n, dtype=torch.float32) + 1).reshape(weight_shape), sig)
    nbytes = int(torch.ops.mkldnn._nbytes(probe))
    if nbytes % (4 * k) or nbytes < 4 * n:
        return None, f"oneDNN's buffer ({nbytes} bytes) is not whole padded rows of {k} weights"
    total = nbytes // 4
    buf = (ctypes.c_float * total).from_address(torch.ops.mkldnn.data_ptr(probe))
    perm = torch.from_numpy(np.frombuffer(buf, dtype=np.float32).astype(np.int64) - 1)  # -1: padding
    block = 1
    while block < min(o, total // k) and int(perm[block]) == block * k:
        block += 1
    rows = -(-o // block) * block
    if rows * k != total:
        return None, f"oneDNN's layout ({total} elements) is not {o} rows in blocks of {block} output channels"
    colperm = perm[: k * block: block].clone()
    if not bool(((colperm >= 0) & (colperm < k)).all()):
        return None, "oneDNN's order is not output-channel-innermost blocks"
    ob = torch.arange(rows // block).view(-1, 1, 1)
    j = colperm.view(1, -1, 1)
    oi = torch.arange(block).view(1, 1, -1)
    row = ob * block + oi
    expected = torch.where(row < o, row * k + j, torch.full_like(row * j, -1)).reshape(-1)
    if not torch.equal(expected, perm):
        return None, "oneDNN's order is not of the supported [O/B][columns][B] form"
    layout = Layout(block, tuple(colperm.tolist()), rows)
    _workspaces()[_workspace_key(sig, layout)] = probe  # the probe's buffer becomes the decode workspace
    return layout, ""


def _workspaces() -> dict:
    if not hasattr(_WORKSPACES, "d"):
        _WORKSPACES.d = {}
    return _WORKSPACES.d


def _workspace_key(sig: tuple, layout: Layout) -> tuple:
    # inputs of other shapes (batch sizes) that get the same layout share the workspace
    return sig[:5] + (layout,)


def workspace(sig: tuple, layout: Layout) -> torch.Tensor:
    """This thread's oneDNN weight tensor for a conv signature and layout (made by a reorder the first
    time, then only ever overwritten by decodes)."""
    ws = _workspaces()
    key = _workspace_key(sig, layout)
    if key not in ws:
        ws[key] = _reorder(torch.zeros(sig[0]), sig)
    return ws[key]


def workspace_bytes() -> int:
    """Bytes held by this thread's decode workspaces (one fp32 weight per distinct conv signature)."""
    return sum(int(torch.ops.mkldnn._nbytes(t)) for t in _workspaces().values())


def clear_workspaces() -> None:
    _workspaces().clear()


def to_blocked(codes: torch.Tensor, layout: Layout, pad_code: int | None = None) -> torch.Tensor:
    """Canonical (O, K) codes -> flat codes in the layout's element order; padding rows get ``pad_code``
    (the code of 0.0 or an unused code, which decodes to 0)."""
    o, k = codes.shape
    b = layout.block
    if layout.rows > o:
        if pad_code is None:
            raise ValueError("this layout pads output channels; pass the code that decodes to 0")
        codes = torch.cat([codes, torch.full((layout.rows - o, k), pad_code, dtype=codes.dtype, device=codes.device)])
    colperm = torch.tensor(layout.colperm, dtype=torch.int64, device=codes.device)
    return codes.reshape(layout.rows // b, b, k)[:, :, colperm].transpose(1, 2).reshape(-1)


def from_blocked(flat: torch.Tensor, layout: Layout, o: int, k: int) -> torch.Tensor:
    """Inverse of :func:`to_blocked`: flat blocked codes -> canonical (O, K)."""
    b = layout.block
    colperm = torch.tensor(layout.colperm, dtype=torch.int64, device=flat.device)
    out = torch.empty(layout.rows // b, b, k, dtype=flat.dtype, device=flat.device)
    out[:, :, colperm] = flat[: layout.rows * k].reshape(layout.rows // b, k, b).transpose(1, 2)
    return out.reshape(layout.rows, k)[:o]


def optimize_for_inference(model: nn.Module, example_input: torch.Tensor, measure: bool = True,
                           repeats: int = 15) -> list[tuple[str, str]]:
    """Store every ``WFNConv2d``'s codes in oneDNN's blocked order for the shapes ``example_input`` gives.

    Runs one forward pass (no grad) to see each conv's input shape. Afterwards a forward pass with fp32
    CPU inputs of those shapes (or any shape for which oneDNN picks the same order) and no autograd runs
    decode-into-oneDNN + conv without a weight reorder; any other call takes the plain path and is still
    correct. ``state_dict()``, ``codes()``, ``save_packed`` see canonical codes.

    ``measure=True`` (default) times each layer both ways on a random input of its shape (medians of
    ``repeats`` interleaved calls) and keeps the oneDNN layout only where it is faster: on tiny convs the
    extra call overhead outweighs the saved reorder. Returns ``[(layer name, 'optimized ...' or the
    reason it was left alone)]``.
    """
    import copy

    from .timing import interleaved_medians
    from .nn import WFNConv2d

    shapes, hooks = {}, []

    def record(name):
        def hook(_module, inputs, _output):
            shapes.setdefault(name, tuple(inputs[0].shape))  # returns None: the output is left alone
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
            x = torch.randn(shapes[name])
            with torch.no_grad():
                t_plain, t_opt = interleaved_medians([lambda: mod(x), lambda: trial(x)], repeats)
            if t_opt < t_plain:
                mod.use_onednn_layout(shapes[name])
                result.append((name, f"optimized ({1e3 * t_plain:.3f} -> {1e3 * t_opt:.3f} ms)"))
            else:
                result.append((name, f"kept the plain layout: the oneDNN layout measured slower here "
                                     f"({1e3 * t_opt:.3f} vs {1e3 * t_plain:.3f} ms)"))
    return result
