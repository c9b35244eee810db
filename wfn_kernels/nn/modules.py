"""Drop-in modules: WFNLinear / WFNConv2d hold packed codes + a local codebook, and ``convert()``.

A converted module computes exactly what its float original computed when the original's weights lie
on the codebook (the decoded weight is bit-identical; accumulation order may differ by backend).
"""

from __future__ import annotations


import torch
from torch import nn

from .. import ops
from ..format.codebook import Codebook
from ..format.packing import PackedWeight, pack_codes, pack_weight, unpack_codes
from ..ops import bf16 as bf16_ops
from ..ops import int8 as int8_ops
from ..ops.reference import ACTIVATION_DTYPES, check_codebook, check_codes_in_range, memory_format_of
from . import torch_internals as ti
from .epilogue import FoldedEpilogue

COMPUTE_MODES = ("float", "bf16", "int8")


class ComputeModeError(ValueError):
    """A layer cannot honour the requested compute mode (the message names it and says why)."""


def parse_compute(mode) -> str:
    if mode not in COMPUTE_MODES:
        raise ValueError(f"unknown compute mode {mode!r}; choose one of {list(COMPUTE_MODES)}")
    return mode


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
    int64 (C,) (position of each local value in the whole-network codebook, -1 if unknown), ``bias``.

    Compute modes (:meth:`set_compute`; the ``compute`` constructor argument):

    - ``"float"`` (default): exact weights, fp32 activations and accumulation (``wfn::codebook_*``).
    - ``"bf16"``: activations rounded to bf16 once, weights exact in bf16 (checked), fp32 accumulation,
      output in x's dtype (``wfn::bf16_*``, wfn_kernels/ops/bf16.py has the error bound).
    - ``"int8"``: activations quantised to int8 per row of the GEMM view (per token; per output pixel for
      convs), weights as exact integers (codebook / its smallest power-of-two step, int8 or int16), int32
      accumulation, one rescale per output (``wfn::int8_*``, wfn_kernels/ops/int8.py).

    bf16 and int8 are inference modes (no autograd). A layer that cannot honour a mode raises ValueError
    saying why; nothing falls back silently.
    """

    compute = "float"

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
        self.register_load_state_dict_post_hook(_refresh_compute_hook)

    # exact values that a dtype cast (model.bfloat16(), .half(), .to(dtype)) must not round
    _FP32_BUFFERS = ("codebook", "bias", "post_scale", "post_shift")

    def _apply(self, fn, recurse=True):
        """Dtype casts (``model.bfloat16()``) leave the codebook, bias and folded-BatchNorm tensors in float32."""
        before = {name: self._buffers.get(name) for name in self._FP32_BUFFERS}
        out = super()._apply(fn, recurse)
        for name, old in before.items():
            if old is not None and (new := self._buffers.get(name)) is not None and new.dtype != old.dtype:
                self._buffers[name] = old.to(device=new.device)
        return out

    def weight_bytes(self) -> dict[str, int]:
        """Packed weight size (codes + local fp32 codebook, + a folded BatchNorm's scale and shift) vs the fp32
        dense weight, in bytes."""
        packed = self.packed.numel() + 4 * self.codebook.numel()
        for name in ("post_scale", "post_shift"):
            t = getattr(self, name, None)
            packed += 0 if t is None else 4 * t.numel()
        rows = self.out_features if isinstance(self, WFNLinear) else self.out_channels
        dense = 4 * rows * self._k()
        return {"packed_bytes": packed, "fp32_bytes": dense}

    def codes(self) -> torch.Tensor:
        """Unpacked int64 codes (out, K)."""
        return unpack_codes(self.packed, self.bits, self._k())

    def set_backend(self, backend: str) -> None:
        self.backend = ops.Backend.parse(backend).value

    def compute_unavailable_reason(self, mode: str) -> str:
        """'' when this layer can run compute ``mode``, else why not."""
        mode = parse_compute(mode)
        if mode == "bf16":
            bad = bf16_ops.bf16_inexact_values(self.codebook)
            return f"codebook values {bad[:5]} are not exactly representable in bfloat16" if bad else ""
        if mode == "int8":
            if isinstance(self, WFNConv2d) and self.groups != 1:
                return f"the int8 conv kernel supports groups=1 only (this layer has groups={self.groups})"
            try:
                int8_ops.integer_weights(self.codebook, self._k())
            except ValueError as exc:
                return str(exc)
        return ""

    def set_compute(self, mode: str) -> None:
        """Switch the arithmetic of the forward pass (see the class docstring). Raises ValueError naming
        the layer and the reason when it cannot honour ``mode`` (the layer keeps its current mode)."""
        mode = parse_compute(mode)
        why = self.compute_unavailable_reason(mode)
        if why:
            raise ComputeModeError(f"{self._describe()}: cannot use compute={mode!r}: {why}")
        if isinstance(self, WFNConv2d) and (mode != "float" or self._hwc):
            self.use_plain_layout()  # the int8/bf16 kernels read canonical codes (bf16 re-lays them per input)
        if mode == "int8":
            iw = int8_ops.integer_weights(self.codebook, self._k())
            self.register_buffer("int_table", iw.table.to(self.packed.device), persistent=False)
            self.int_step = iw.step
        else:
            self.register_buffer("int_table", None, persistent=False)
            self.int_step = 1.0
        self.compute = mode

    def _check_inference(self, x) -> None:
        if isinstance(x, torch.Tensor) and x.requires_grad and torch.is_grad_enabled():
            raise RuntimeError(f"{self._describe()}: compute={self.compute!r} is an inference mode (no autograd); "
                               "run under torch.no_grad() / inference_mode(), or set_compute('float') to train")


class WFNLinear(_WFNBase):
    """Linear layer y = x @ W.T + b with W = codebook[codes] (out_features, in_features).

    Input (..., in_features) float32/bfloat16/float16; output (..., out_features), same dtype.

    ``compute`` picks the arithmetic (class docstring of the base: "float", "bf16", "int8").
    ``shift_add=True`` (or :meth:`enable_shift_add`) is ``compute="int8"``: the accelerator's shift-add
    arithmetic (integer weights times int8 activations into int32; ``wfn::shift_add_linear`` is its
    multiplier-free spec for order-0 codebooks) on the CPU's integer dot-product units.
    """

    def __init__(self, packed: PackedWeight, bias: torch.Tensor | None = None, backend: str = "auto",
                 shift_add: bool = False, compute: str = "float"):
        super().__init__()
        if len(packed.shape) != 2:
            raise ValueError(f"WFNLinear needs a 2-D weight, got shape {packed.shape}")
        self.out_features, self.in_features = packed.shape
        self._init_weight(packed, bias, backend)
        parse_compute(compute)
        if shift_add and compute not in ("float", "int8"):
            raise ValueError(f"shift_add=True means compute='int8'; it conflicts with compute={compute!r}")
        mode = "int8" if shift_add else compute
        if mode != "float":
            self.set_compute(mode)

    @classmethod
    def from_linear(cls, linear: nn.Linear, codebook: Codebook, name: str = "linear",
                    backend: str = "auto", shift_add: bool = False, compute: str = "float") -> WFNLinear:
        """Pack ``linear``'s weight onto ``codebook``; raises naming ``name`` if weights are off it."""
        return cls(pack_weight(linear.weight, codebook, name=name), linear.bias, backend, shift_add, compute)

    @property
    def shift_add(self) -> bool:
        """Whether the layer runs the int8 (shift-add) mode."""
        return self.compute == "int8"

    def enable_shift_add(self, enabled: bool = True) -> None:
        """``set_compute("int8")`` (or back to ``"float"``)."""
        self.set_compute("int8" if enabled else "float")

    def _describe(self) -> str:
        return f"WFNLinear({self.in_features}->{self.out_features})"

    def _forward_mode(self, x: torch.Tensor) -> torch.Tensor:
        self._check_inference(x)
        bufs = self._buffers
        k = self.in_features
        if self.compute == "int8":
            if x.dim() >= 1 and x.shape[-1] == k and _direct_call_ok(self, bufs["packed"], x):
                x2 = (x.reshape(-1, k) if x.dim() != 2 else x).contiguous()
                y = ti.redispatch_cpu(torch.ops.wfn.int8_linear.default, x2, bufs["packed"], bufs["int_table"],
                                      self.bits, k, self.int_step, bufs["bias"])
                return y if x.dim() == 2 else y.reshape(*x.shape[:-1], self.out_features)
            return int8_ops.int8_linear(x, self.packed, self.int_table, self.bits, self.int_step, self.bias,
                                        in_features=k, backend=self.backend)
        if x.dim() >= 1 and x.shape[-1] == k and _direct_call_ok(self, bufs["packed"], x):
            x2 = (x.reshape(-1, k) if x.dim() != 2 else x).contiguous()
            y = ti.redispatch_cpu(torch.ops.wfn.bf16_linear.default, x2, bufs["packed"], bufs["codebook"],
                                  self.bits, k, bufs["bias"])
            return y if x.dim() == 2 else y.reshape(*x.shape[:-1], self.out_features)
        return bf16_ops.bf16_linear(x, self.packed, self.codebook, self.bits, self.bias, in_features=k,
                                    backend=self.backend)

    def _k(self) -> int:
        return self.in_features

    def dense_weight(self) -> torch.Tensor:
        """Decoded float32 weight (out_features, in_features)."""
        return self.codebook[self.codes()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.compute != "float":
            return self._forward_mode(x)
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
                + (f", compute={self.compute}" if self.compute != "float" else ""))


class WFNConv2d(FoldedEpilogue, _WFNBase):
    """Conv2d with W = codebook[codes].reshape(out, in/groups, kh, kw); input (B, C, H, W)."""

    def __init__(self, packed: PackedWeight, bias: torch.Tensor | None = None, stride=1, padding=0,
                 dilation=1, groups: int = 1, backend: str = "auto", compute: str = "float"):
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
        # True: each output channel's codes in (kh, kw, C) order (bf16 mode, channels_last input: bf16_conv_op)
        self._hwc = False
        self._register_state_dict_hook(_canonical_packed_hook)
        self._init_epilogue()
        if parse_compute(compute) != "float":
            self.set_compute(compute)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, codebook: Codebook, name: str = "conv",
                  backend: str = "auto", compute: str = "float") -> WFNConv2d:
        """Pack ``conv``'s weight onto ``codebook`` (zeros padding mode only)."""
        if conv.padding_mode != "zeros":
            raise ValueError(f"{name}: padding_mode={conv.padding_mode!r} is not supported (only 'zeros')")
        return cls(pack_weight(conv.weight, codebook, name=name), conv.bias, conv.stride, conv.padding,
                   conv.dilation, conv.groups, backend, compute)

    def _describe(self) -> str:
        return f"WFNConv2d({self.in_channels}->{self.out_channels}, kernel_size={self.kernel_size})"

    def _k(self) -> int:
        return self.weight_shape[1] * self.weight_shape[2] * self.weight_shape[3]

    def dense_weight(self) -> torch.Tensor:
        """Decoded float32 weight (out, in/groups, kh, kw)."""
        return self.codebook[self.codes()].reshape(self.weight_shape)

    def codes(self) -> torch.Tensor:
        """Unpacked int64 codes (out, K) in canonical row order (whatever the in-memory layout)."""
        if self._hwc:
            return bf16_ops.codes_from_hwc(unpack_codes(self.packed, self.bits, self._k()), self.weight_shape)
        if self._onednn is None:
            return unpack_codes(self.packed, self.bits, self._k())
        from . import onednn_layout as onednn

        flat = unpack_codes(self.packed, self.bits, self._onednn["row"]).reshape(-1)
        return onednn.from_blocked(flat, self._onednn["layout"], self.out_channels, self._k())

    def canonical_packed(self) -> torch.Tensor:
        """The packed codes in the canonical (out, row_bytes) format (``packed`` unless re-laid out)."""
        return self.packed if self._onednn is None and not self._hwc else pack_codes(self.codes(), self.bits)

    def use_onednn_layout(self, input_shape) -> str:
        """Re-lay the codes out in oneDNN's blocked weight order for inputs of ``input_shape`` (see
        wfn_kernels/nn/onednn_layout.py); returns '' when done, else the reason nothing changed."""
        from . import onednn_layout

        if self.compute != "float":
            return f"compute={self.compute!r} runs its own kernels on the canonical codes (the layout is for 'float')"

        return onednn_layout.enable(self, input_shape)

    def use_plain_layout(self) -> None:
        """Undo :meth:`use_onednn_layout` or the bf16 mode's channels_last order (codes back in canonical row
        order)."""
        if self._onednn is not None or self._hwc:
            packed = self.canonical_packed()
            self._onednn, self._hwc = None, False
            self.packed = packed

    def _forward_mode(self, x: torch.Tensor) -> torch.Tensor:
        self._check_inference(x)
        bufs = self._buffers
        geo = (list(self.stride), list(self.padding), list(self.dilation), self.groups)
        direct = x.dim() == 4 and x.shape[1] == self.in_channels and _direct_call_ok(self, bufs["packed"], x)
        if self.compute == "int8":
            if direct:
                xc = x.contiguous(memory_format=memory_format_of(x))  # channels_last stays so
                args = (xc, bufs["packed"], bufs["int_table"], self.bits, list(self.weight_shape), bufs["bias"], *geo,
                        self.int_step)
                if not self._has_post():
                    return ti.redispatch_cpu(torch.ops.wfn.int8_conv2d.default, *args)
                return ti.redispatch_cpu(torch.ops.wfn.int8_conv2d_post.default, *args, self.post_scale,
                                         self.post_shift, self.post_relu)
            return int8_ops.int8_conv2d(x, self.packed, self.int_table, self.bits, self.weight_shape, self.int_step,
                                        self.bias, self.stride, self.padding, self.dilation, self.groups,
                                        backend=self.backend, post_scale=self.post_scale,
                                        post_shift=self.post_shift, relu=self.post_relu)
        if direct:
            xc = x.contiguous(memory_format=memory_format_of(x))
            from . import onednn_layout

            op = onednn_layout.bf16_conv_op(self, xc)
            return self._post(ti.redispatch_cpu(op, xc, bufs["packed"], bufs["codebook"], self.bits,
                                                list(self.weight_shape), bufs["bias"], *geo))
        return self._post(bf16_ops.bf16_conv2d(x, self.canonical_packed(), self.codebook, self.bits, self.weight_shape,
                                               self.bias, self.stride, self.padding, self.dilation, self.groups,
                                               backend=self.backend))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.compute != "float":
            return self._forward_mode(x)
        if self._has_post():
            if self._onednn is not None:  # the folded BatchNorm / ReLU inside the oneDNN conv
                from . import onednn_layout

                y = onednn_layout.forward(self, x, fold_post=True)
                if y is not None:
                    return y
            return self._post(self._forward_float(x))
        return self._forward_float(x)

    def _forward_float(self, x: torch.Tensor) -> torch.Tensor:
        if self._onednn is not None:
            from . import onednn_layout

            y = onednn_layout.forward(self, x)
            if y is not None:
                return y
        bufs = self._buffers
        if (self._onednn is None and x.dim() == 4 and x.shape[1] == self.in_channels
                and _direct_call_ok(self, bufs["packed"], x)):
            xc = x.contiguous(memory_format=memory_format_of(x))  # channels_last stays so
            return ti.redispatch_cpu(torch.ops.wfn.codebook_conv2d.default, xc, bufs["packed"],
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
                f"backend={self.backend}" + (f", compute={self.compute}" if self.compute != "float" else "")
                + (f", layout=onednn(block={self._onednn['layout'].block})" if self._onednn is not None else "")
                + (", layout=hwc" if self._hwc else "")
                + (", post=" + ("bn" if self.post_scale is not None else "") + ("+relu" if self.post_relu else "")
                   if self._has_post() else ""))


def _refresh_compute_hook(module, incompatible_keys) -> None:
    """A loaded codebook may differ: rebuild the integer table of a non-float mode (or raise why not)."""
    if module.compute != "float":
        module.set_compute(module.compute)


def _canonical_packed_hook(module, state_dict, prefix, local_metadata):
    """state_dict() always holds canonical codes, whatever the in-memory layout."""
    if module._onednn is not None or module._hwc:
        state_dict[prefix + "packed"] = module.canonical_packed()
    return state_dict


