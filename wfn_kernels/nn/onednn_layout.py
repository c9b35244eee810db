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

The bf16 mode's counterpart (:func:`bf16_conv_op`) is simpler: for channels_last inputs the codes go in
(kh, kw, C) order, so the decoded bf16 weight is channels_last as at::conv2d wants it.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass

import numpy as np
import torch

from .. import ops
from ..format.packing import pack_codes
from ..ops import bf16 as bf16_ops
from ..ops.reference import memory_format_of
from . import torch_internals as ti

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
    reason = ti.onednn_unavailable_reason()
    if reason:
        return reason
    if not ops.extension_loaded():
        return f"the C++ extension is not loaded: {ops.extension_reason()}"
    if not hasattr(torch.ops.wfn_cpu, "decode_into_mkldnn"):
        return "the C++ extension predates decode_into_mkldnn; rebuild it"
    return ""


def _signature(weight_shape, stride, padding, dilation, groups, input_shape) -> tuple:
    return (tuple(weight_shape), tuple(stride), tuple(padding), tuple(dilation), int(groups), tuple(input_shape))


def _reorder(weight: torch.Tensor, sig: tuple) -> torch.Tensor:
    _, stride, padding, dilation, groups, input_shape = sig
    return ti.mkldnn_reorder_conv_weight(weight, padding, stride, dilation, groups, input_shape)


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
    address, nbytes = ti.mkldnn_buffer(probe)
    if nbytes % (4 * k) or nbytes < 4 * n:
        return None, f"oneDNN's buffer ({nbytes} bytes) is not whole padded rows of {k} weights"
    total = nbytes // 4
    buf = (ctypes.c_float * total).from_address(address)
    perm = torch.from_numpy(np.frombuffer(buf, dtype=np.float32).astype(np.int64) - 1)  # -1: padding
    layout, why = layout_from_perm(perm, o, k)
    if layout is not None:
        _workspaces()[_workspace_key(sig, layout)] = probe  # the probe's buffer becomes the decode workspace
    return layout, why


def layout_from_perm(perm: torch.Tensor, o: int, k: int) -> tuple[Layout | None, str]:
    """(Layout, '') from the probe's permutation (element i of oneDNN's buffer holds canonical weight perm[i],
    -1 for padding), or (None, reason) when it is not of the supported [O/B][columns][B] form."""
    total = perm.numel()
    # the block is where the second column starts; a block wider than O holds padding rows (-1)
    block = 1
    while block < total // k and int(perm[block]) == (block * k if block < o else -1):
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
    return Layout(block, tuple(colperm.tolist()), rows), ""


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
    return sum(ti.mkldnn_buffer(t)[1] for t in _workspaces().values())


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


def enable(mod, input_shape) -> str:
    """WFNConv2d.use_onednn_layout: re-lay ``mod``'s codes out; '' when done, else why not."""
    input_shape = tuple(int(v) for v in input_shape)
    if mod._onednn is not None:
        return "" if signature_for(mod, input_shape) is not None else "oneDNN picks another layout"
    if mod.packed.device.type != "cpu":
        return f"on {mod.packed.device}, not the CPU"
    layout, why = probe_layout(mod.weight_shape, mod.stride, mod.padding, mod.dilation, mod.groups, input_shape)
    if layout is None:
        return why
    pad_code = None
    if layout.rows > mod.out_channels:  # padded channels must decode to exactly 0
        zero = (mod.codebook == 0).nonzero()
        pad_code = int(zero[0]) if zero.numel() else mod.codebook.numel()
        if pad_code >= 1 << mod.bits:
            return (f"oneDNN pads {mod.out_channels} output channels to {layout.rows}, and the full "
                    f"{mod.bits}-bit codebook has no code for 0")
    row = layout.row_elems(mod._k())
    blocked = to_blocked(mod.codes(), layout, pad_code)
    mod.packed = pack_codes(blocked.reshape(-1, row), mod.bits)
    sig = _signature(mod.weight_shape, mod.stride, mod.padding, mod.dilation, mod.groups, input_shape)
    mod._onednn = {"layout": layout, "row": row, "shapes": {input_shape: sig}, "rejected": set()}
    return ""


def signature_for(mod, shape: tuple):
    """The workspace signature for inputs of ``shape`` if oneDNN uses this layer's layout for them."""
    plan = mod._onednn
    if shape in plan["shapes"]:
        return plan["shapes"][shape]
    if shape in plan["rejected"] or len(plan["shapes"]) + len(plan["rejected"]) >= 64:
        return None
    layout, _ = probe_layout(mod.weight_shape, mod.stride, mod.padding, mod.dilation,
                             mod.groups, shape)
    if layout != plan["layout"]:
        plan["rejected"].add(shape)
        return None
    plan["shapes"][shape] = sig = _signature(mod.weight_shape, mod.stride, mod.padding,
                                             mod.dilation, mod.groups, shape)
    return sig


def _folded_post(mod) -> tuple[torch.Tensor, torch.Tensor]:
    """The module's folded epilogue (fold_post) moved into the conv: per-channel weight scale (padded with 1
    to the layout's rows) and bias ``bias * scale + shift``; cached until the epilogue or bias changes."""
    key = (mod.post_scale, mod.post_shift, mod.bias)  # held by the cache, so identity cannot be reused
    cached = mod._onednn.get("post")
    if cached is not None and all(a is b for a, b in zip(cached[0], key)):
        return cached[1], cached[2]
    n, rows = mod.out_channels, mod._onednn["layout"].rows
    scale = torch.ones(rows)
    scale[:n] = mod.post_scale
    bias = mod.post_shift + (0.0 if mod.bias is None else mod.bias.float() * mod.post_scale)
    bias = bias.contiguous()
    mod._onednn["post"] = (key, scale, bias)
    return scale, bias


def forward(mod, x: torch.Tensor, fold_post: bool = False):
    """The decode-into-oneDNN conv, or None when this call cannot take it. ``fold_post``: apply the
    module's folded BatchNorm (and ReLU) inside the conv: each channel's weights scaled as they are
    decoded, the shift in the bias, the ReLU as oneDNN's post-op (no passes over the output)."""
    if (x.dtype != torch.float32 or x.device.type != "cpu" or x.dim() != 4 or mod.backend == "reference"
            or (x.requires_grad and torch.is_grad_enabled()) or torch.compiler.is_compiling()):
        return None
    sig = signature_for(mod, tuple(x.shape))
    if sig is None:
        return None
    layout = mod._onednn["layout"]
    ws = workspace(sig, layout)
    # oneDNN reads NHWC activations as they are (a channels_last model runs with no layout copy); its output
    # is channels_last either way
    xc = x if x.is_contiguous(memory_format=torch.channels_last) else x.contiguous()
    scale, bias = _folded_post(mod) if fold_post else (None, mod.bias)
    torch.ops.wfn_cpu.decode_into_mkldnn(mod.packed, mod.codebook, mod.bits, mod._onednn["row"], ws, scale,
                                         layout.block, mod._k())
    return ti.mkldnn_conv(xc, ws, bias, mod.padding, mod.stride, mod.dilation, mod.groups,
                          relu=fold_post and mod.post_relu)



def bf16_conv_op(mod, x: torch.Tensor):
    """The bf16 conv op for ``x``, with ``mod``'s codes re-laid out for it: a channels_last input on a CPU with
    AVX512_BF16 and no AMX gets each output channel's codes in (kh, kw, C) order, so the decoded weight is
    channels_last as oneDNN's channels_last conv reads it (at::conv2d would copy an (O, C, kh, kw) one on every
    call); any other input gets canonical codes (so alternating layouts re-lays them on every call). AMX CPUs
    keep canonical codes: their few-pixel convs run on AMX tiles from those."""
    hwc = (memory_format_of(x) == torch.channels_last and mod.weight_shape[2] * mod.weight_shape[3] > 1
           and torch.ops.wfn_cpu.bf16_capability() == "avx512_bf16" and not torch.ops.wfn_cpu.amx_capability())
    if hwc and not mod._hwc:
        mod.packed = pack_codes(bf16_ops.hwc_codes(mod.codes(), mod.weight_shape), mod.bits)
        mod._hwc = True
    elif mod._hwc and not hwc:
        mod.use_plain_layout()
    return torch.ops.wfn.bf16_conv2d_hwc.default if hwc else torch.ops.wfn.bf16_conv2d.default
