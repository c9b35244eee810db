"""Drop-in modules: WFNLinear / WFNConv2d hold packed codes + a local codebook, and ``convert()``.

A converted module computes exactly what its float original computed when the original's weights lie
on the codebook (the decoded weight is bit-identical; accumulation order may differ by backend).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .. import ops
from ..format.codebook import Codebook
from ..format.packing import PackedWeight, pack_codes, pack_weight, unpack_codes
from ..ops.reference import ACTIVATION_DTYPES, check_codebook, check_codes_in_range
from ..ops.shift_add import ShiftAddWeight, encode_shift_add, quantize_activations_int8, shift_add_linear
from . import torch_internals as ti


def _direct_call_ok(module, packed: torch.Tensor, x) -> bool:
    """Whether a forward may call the C++ CPU kernel directly, skipping the Python front end (the module's
    own tensors were validated when it was built) and the Python autograd wrapper of the op: about 7 us
    per call, which is most of a small layer's time. Only for plain CPU tensors that need no autograd,
    with no tracing, dispatch mode or functorch transform active; anything else takes the full path."""
    return (ti.DIRECT_CALL_OK and module.__dict__["backend"] in ("auto", "extension") and ops.extension_loaded()
            and type(x) is torch.Tensor and x.is_cpu and packed.is_cpu and x.dtype in ACTIVATION_DTYPES
            and not (x.requires_grad and torch.is_grad_enabled()) and ti.plain_eager_call(x))


class _WFNBase(nn.Module):
    """Shared buffers: ``packed`` uint8 (out, row_bytes), ``codebook`` float32 (C,), ``global_index``
    int64 (C,) (position of each local value in the whole-network codebook, -1 if unknown), ``bias``."""

    def _init_weight(self, pw: PackedWeight, bias: torch.Tensor | None, backend: str) -> None:
        check_codebook(pw.codebook, pw.bits)
        check_codes_in_range(pw.packed, pw.bits, pw.in_features, pw.codebook.numel())
        self.bits = pw.bits
        self.backend = ops.Backend.parse(backend).value
        self.register_buffer("packed", pw.packed.contiguous())
        self.register_buffer("codebook", pw.codebook.float().contiguous())
        gi = pw.global_index if pw.global_index is not None else torch.full((pw.codebook.numel(),), -1)
        self.register_buffer("global_index", gi.to(torch.int64))
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    def weight_bytes(self) -> dict[str, int]:
        """Packed weight size (codes + local fp32 codebook) vs the fp32 dense weight, in bytes."""
        packed = self.packed.numel() + 4 * self.codebook.numel()
        rows = self.out_features if isinstance(self, WFNLinear) else self.out_channels
        dense = 4 * rows * self._k()
        return {"packed_bytes": packed, "fp32_bytes": dense}

    def codes(self) -> torch.Tensor:
        """Unpacked int64 codes (out, K)."""
        return unpack_codes(self.packed, self.bits, self._k())

    def set_backend(self, backend: str) -> None:
        self.backend = ops.Backend.parse(backend).value


class WFNLinear(_WFNBase):
    """Linear layer y = x @ W.T + b with W = codebook[codes] (out_features, in_features).

    Input (..., in_features) float32/bfloat16/float16; output (..., out_features), same dtype.

    With ``shift_add=True`` (or :meth:`enable_shift_add`) the forward pass runs the multiplier-free
    integer path instead: activations are quantised to int8 per call (symmetric, per tensor), multiplied
    by the order-0 power-of-two weights with shifts and adds into int32 (``wfn::shift_add_linear``), then
    rescaled. That is exact when the input is already integer-valued with max |x| = 127, and otherwise
    carries int8 activation rounding (|error| <= scale/2 per activation). It needs every codebook value
    to be 0 or +-2**e with the exponents spanning at most 7 values, and raises ValueError otherwise.
    """

    def __init__(self, packed: PackedWeight, bias: torch.Tensor | None = None, backend: str = "auto",
                 shift_add: bool = False):
        super().__init__()
        if len(packed.shape) != 2:
            raise ValueError(f"WFNLinear needs a 2-D weight, got shape {packed.shape}")
        self.out_features, self.in_features = packed.shape
        self._init_weight(packed, bias, backend)
        self.shift_add = False
        self.shift_add_e_min = 0
        self.register_buffer("shift_add_packed", None, persistent=False)
        if shift_add:
            self.enable_shift_add()

    @classmethod
    def from_linear(cls, linear: nn.Linear, codebook: Codebook, name: str = "linear",
                    backend: str = "auto", shift_add: bool = False) -> WFNLinear:
        """Pack ``linear``'s weight onto ``codebook``; raises naming ``name`` if weights are off it."""
        return cls(pack_weight(linear.weight, codebook, name=name), linear.bias, backend, shift_add)

    def enable_shift_add(self, enabled: bool = True) -> None:
        """Switch the forward pass to (or back from) the int8 shift-add path; see the class docstring.

        Raises ValueError (naming the offending values) when the layer's codebook is not order-0."""
        if not enabled:
            self.shift_add, self.shift_add_packed = False, None
            return
        try:
            sa = encode_shift_add(self.codebook.cpu(), self.codes())
        except ValueError as exc:
            raise ValueError(f"WFNLinear({self.in_features}->{self.out_features}): cannot use the shift-add "
                             f"path: {exc}") from None
        self.shift_add_packed = sa.packed.to(self.packed.device)
        self.shift_add_e_min = sa.e_min
        self.shift_add = True

    def _forward_shift_add(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"x has {x.shape[-1]} features but the layer has in_features={self.in_features}")
        lead = x.shape[:-1]
        xq, x_scale = quantize_activations_int8(x.reshape(-1, self.in_features).float())
        w = ShiftAddWeight(self.shift_add_packed, self.shift_add_e_min, self.in_features)
        backend = "reference" if self.backend == "reference" else "auto"
        y = shift_add_linear(xq, w, backend=backend).float() * (x_scale * w.scale)
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype).reshape(*lead, self.out_features)

    def _k(self) -> int:
        return self.in_features

    def dense_weight(self) -> torch.Tensor:
        """Decoded float32 weight (out_features, in_features)."""
        return self.codebook[self.codes()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shift_add:
            return self._forward_shift_add(x)
        bufs = self._buffers
        k = self.in_features
        if x.dim() >= 1 and x.shape[-1] == k and _direct_call_ok(self, bufs["packed"], x):
            x2 = (x.reshape(-1, k) if x.dim() != 2 else x).contiguous()
            y = ti.redispatch_cpu(torch.ops.wfn.codebook_linear.default, x2, bufs["packed"], bufs["codebook"],
                                  self.bits, k, bufs["bias"])
            return y if x.dim() == 2 else y.reshape(*x.shape[:-1], self.out_features)
        return ops.codebook_linear(x, self.packed, self.codebook, self.bits, self.bias,
                                   in_features=self.in_features, backend=self.backend, validate=False)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"bits={self.bits}, codebook_size={self.codebook.numel()}, backend={self.backend}"
                + (", shift_add=True" if self.shift_add else ""))


class WFNConv2d(_WFNBase):
    """Conv2d with W = codebook[codes].reshape(out, in/groups, kh, kw); input (B, C, H, W)."""

    def __init__(self, packed: PackedWeight, bias: torch.Tensor | None = None, stride=1, padding=0,
                 dilation=1, groups: int = 1, backend: str = "auto"):
        super().__init__()
        if len(packed.shape) != 4:
            raise ValueError(f"WFNConv2d needs a 4-D weight, got shape {packed.shape}")
        if isinstance(padding, str):
            raise ValueError(f"WFNConv2d needs numeric padding, got {padding!r}")
        self.out_channels = packed.shape[0]
        self.in_channels = packed.shape[1] * groups
        self.kernel_size = tuple(packed.shape[2:])
        self.stride, self.padding, self.dilation = ops._pair(stride), ops._pair(padding), ops._pair(dilation)
        self.stride, self.padding, self.dilation = tuple(self.stride), tuple(self.padding), tuple(self.dilation)
        self.groups = int(groups)
        self.weight_shape = tuple(packed.shape)
        self._init_weight(packed, bias, backend)
        # None, or the oneDNN inference layout (wfn_kernels/nn/onednn_layout.py): {"layout", "row", "shapes", "rejected"}
        self._onednn = None
        self._register_state_dict_hook(_canonical_packed_hook)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, codebook: Codebook, name: str = "conv",
                  backend: str = "auto") -> WFNConv2d:
        """Pack ``conv``'s weight onto ``codebook`` (zeros padding mode only)."""
        if conv.padding_mode != "zeros":
            raise ValueError(f"{name}: padding_mode={conv.padding_mode!r} is not supported (only 'zeros')")
        return cls(pack_weight(conv.weight, codebook, name=name), conv.bias, conv.stride, conv.padding,
                   conv.dilation, conv.groups, backend)

    def _k(self) -> int:
        return self.weight_shape[1] * self.weight_shape[2] * self.weight_shape[3]

    def dense_weight(self) -> torch.Tensor:
        """Decoded float32 weight (out, in/groups, kh, kw)."""
        return self.codebook[self.codes()].reshape(self.weight_shape)

    def codes(self) -> torch.Tensor:
        """Unpacked int64 codes (out, K) in canonical row order (whatever the in-memory layout)."""
        if self._onednn is None:
            return unpack_codes(self.packed, self.bits, self._k())
        from . import onednn_layout as onednn

        flat = unpack_codes(self.packed, self.bits, self._onednn["row"]).reshape(-1)
        return onednn.from_blocked(flat, self._onednn["layout"], self.out_channels, self._k())

    def canonical_packed(self) -> torch.Tensor:
        """The packed codes in the canonical (out, row_bytes) format (``packed`` unless re-laid out)."""
        return self.packed if self._onednn is None else pack_codes(self.codes(), self.bits)

    def use_onednn_layout(self, input_shape) -> str:
        """Re-lay the codes out in oneDNN's blocked weight order for inputs of ``input_shape`` (see
        wfn_kernels/nn/onednn_layout.py); returns '' when done, else the reason nothing changed."""
        from . import onednn_layout

        return onednn_layout.enable(self, input_shape)

    def use_plain_layout(self) -> None:
        """Undo :meth:`use_onednn_layout` (codes back in canonical row order)."""
        if self._onednn is not None:
            packed = self.canonical_packed()
            self._onednn = None
            self.packed = packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._onednn is not None:
            from . import onednn_layout

            y = onednn_layout.forward(self, x)
            if y is not None:
                return y
        bufs = self._buffers
        if (self._onednn is None and x.dim() == 4 and x.shape[1] == self.in_channels
                and _direct_call_ok(self, bufs["packed"], x)):
            return ti.redispatch_cpu(torch.ops.wfn.codebook_conv2d.default, x.contiguous(), bufs["packed"],
                                     bufs["codebook"], self.bits, list(self.weight_shape), bufs["bias"],
                                     list(self.stride), list(self.padding), list(self.dilation), self.groups)
        return ops.codebook_conv2d(x, self.canonical_packed(), self.codebook, self.bits, self.weight_shape,
                                   self.bias, self.stride, self.padding, self.dilation, self.groups,
                                   backend=self.backend, validate=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self.use_plain_layout()  # incoming codes are canonical; optimize again after loading if wanted
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
                f"bias={self.bias is not None}, bits={self.bits}, codebook_size={self.codebook.numel()}, "
                f"backend={self.backend}"
                + (f", layout=onednn(block={self._onednn['layout'].block})" if self._onednn is not None else ""))


def _canonical_packed_hook(module, state_dict, prefix, local_metadata):
    """state_dict() always holds canonical codes, whatever the in-memory layout."""
    if module._onednn is not None:
        state_dict[prefix + "packed"] = module.canonical_packed()
    return state_dict


