"""Drop-in modules: WFNLinear / WFNConv2d hold packed codes + a local codebook, and ``convert()``.

A converted module computes exactly what its float original computed when the original's weights lie
on the codebook (the decoded weight is bit-identical; accumulation order may differ by backend).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from . import ops
from .codebook import DEFAULT_MAX_TERMS, Codebook
from .packing import PackedWeight, pack_codes, pack_weight, unpack_codes
from .reference import ACTIVATION_DTYPES, check_codebook, check_codes_in_range
from .shift_add import ShiftAddWeight, encode_shift_add, quantize_activations_int8, shift_add_linear


_CPU_KEYS = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)
_LINEAR_OP = torch.ops.wfn.codebook_linear.default
_CONV_OP = torch.ops.wfn.codebook_conv2d.default


def _direct_call_ok(module, packed: torch.Tensor, x) -> bool:
    """Whether a forward may call the C++ CPU kernel directly, skipping the Python front end (the module's
    own tensors were validated when it was built) and the Python autograd wrapper of the op: about 7 us
    per call, which is most of a small layer's time. Only for plain CPU tensors that need no autograd,
    with no tracing, dispatch mode or functorch transform active; anything else takes the full path."""
    return (module.__dict__["backend"] in ("auto", "extension") and ops._C is not None and type(x) is torch.Tensor
            and x.is_cpu and packed.is_cpu and x.dtype in ACTIVATION_DTYPES
            and not (x.requires_grad and torch.is_grad_enabled()) and not torch.compiler.is_compiling()
            and torch._C._len_torch_dispatch_stack() == 0 and not torch._C._functorch.is_functorch_wrapped_tensor(x))


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
            y = _LINEAR_OP.redispatch(_CPU_KEYS, (x.reshape(-1, k) if x.dim() != 2 else x).contiguous(),
                                      bufs["packed"], bufs["codebook"], self.bits, k, bufs["bias"])
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
        # None, or the oneDNN inference layout (wfn_kernels/onednn.py): {"layout", "row", "shapes", "rejected"}
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
        from . import onednn

        flat = unpack_codes(self.packed, self.bits, self._onednn["row"]).reshape(-1)
        return onednn.from_blocked(flat, self._onednn["layout"], self.out_channels, self._k())

    def canonical_packed(self) -> torch.Tensor:
        """The packed codes in the canonical (out, row_bytes) format (``packed`` unless re-laid out)."""
        return self.packed if self._onednn is None else pack_codes(self.codes(), self.bits)

    def use_onednn_layout(self, input_shape) -> str:
        """Re-lay the codes out in oneDNN's blocked weight order for inputs of ``input_shape`` (see
        wfn_kernels/onednn.py); returns '' when done, else the reason nothing changed."""
        from . import onednn

        input_shape = tuple(int(v) for v in input_shape)
        if self._onednn is not None:
            return "" if self._onednn_signature(input_shape) is not None else "oneDNN picks another layout"
        if self.packed.device.type != "cpu":
            return f"on {self.packed.device}, not the CPU"
        layout, why = onednn.probe_layout(self.weight_shape, self.stride, self.padding, self.dilation,
                                          self.groups, input_shape)
        if layout is None:
            return why
        pad_code = None
        if layout.rows > self.out_channels:  # padded channels must decode to exactly 0
            zero = (self.codebook == 0).nonzero()
            pad_code = int(zero[0]) if zero.numel() else self.codebook.numel()
            if pad_code >= 1 << self.bits:
                return (f"oneDNN pads {self.out_channels} output channels to {layout.rows}, and the full "
                        f"{self.bits}-bit codebook has no code for 0")
        row = layout.row_elems(self._k())
        blocked = onednn.to_blocked(self.codes(), layout, pad_code)
        self.packed = pack_codes(blocked.reshape(-1, row), self.bits)
        sig = onednn._signature(self.weight_shape, self.stride, self.padding, self.dilation, self.groups,
                                input_shape)
        self._onednn = {"layout": layout, "row": row, "shapes": {input_shape: sig}, "rejected": set()}
        return ""

    def use_plain_layout(self) -> None:
        """Undo :meth:`use_onednn_layout` (codes back in canonical row order)."""
        if self._onednn is not None:
            packed = self.canonical_packed()
            self._onednn = None
            self.packed = packed

    def _onednn_signature(self, shape: tuple):
        """The workspace signature for inputs of ``shape`` if oneDNN uses this layer's layout for them."""
        plan = self._onednn
        if shape in plan["shapes"]:
            return plan["shapes"][shape]
        if shape in plan["rejected"] or len(plan["shapes"]) + len(plan["rejected"]) >= 64:
            return None
        from . import onednn

        layout, _ = onednn.probe_layout(self.weight_shape, self.stride, self.padding, self.dilation,
                                        self.groups, shape)
        if layout != plan["layout"]:
            plan["rejected"].add(shape)
            return None
        plan["shapes"][shape] = sig = onednn._signature(self.weight_shape, self.stride, self.padding,
                                                        self.dilation, self.groups, shape)
        return sig

    def _onednn_forward(self, x: torch.Tensor):
        """The decode-into-oneDNN conv, or None when this call cannot take it."""
        if (x.dtype != torch.float32 or x.device.type != "cpu" or x.dim() != 4 or self.backend == "reference"
                or (x.requires_grad and torch.is_grad_enabled()) or torch.compiler.is_compiling()):
            return None
        sig = self._onednn_signature(tuple(x.shape))
        if sig is None:
            return None
        from . import onednn

        ws = onednn.workspace(sig, self._onednn["layout"])
        torch.ops.wfn_cpu.decode_into_mkldnn(self.packed, self.codebook, self.bits, self._onednn["row"], ws)
        return torch.ops.mkldnn._convolution_pointwise(x.contiguous(), ws, self.bias, list(self.padding),
                                                       list(self.stride), list(self.dilation), self.groups,
                                                       "none", [], "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._onednn is not None:
            y = self._onednn_forward(x)
            if y is not None:
                return y
        bufs = self._buffers
        if (self._onednn is None and x.dim() == 4 and x.shape[1] == self.in_channels
                and _direct_call_ok(self, bufs["packed"], x)):
            return _CONV_OP.redispatch(_CPU_KEYS, x.contiguous(), bufs["packed"], bufs["codebook"], self.bits,
                                       list(self.weight_shape), bufs["bias"], list(self.stride), list(self.padding),
                                       list(self.dilation), self.groups)
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


# ---------------------------------------------------------------------------------------------------
# convert()

@dataclass
class ConversionReport:
    """What ``convert`` did: converted layers (name, kind, bits, codebook size), skipped ones with the
    reason, and the whole-network codebook used."""

    codebook: Codebook | None
    converted: list[dict] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"converted {len(self.converted)} layer(s), skipped {len(self.skipped)}; whole-network "
                 f"codebook: {len(self.codebook) if self.codebook is not None else 0} values"]
        lines += [f"  + {c['name']}: {c['kind']} {c['bits']}-bit, {c['codebook_size']} values"
                  + (f", shift-add {c['shift_add']}" if "shift_add" in c else "") for c in self.converted]
        lines += [f"  - {name}: {why}" for name, why in self.skipped]
        return "\n".join(lines)


def _candidates(model: nn.Module, filter_fn) -> tuple[list[tuple[str, nn.Module]], list[tuple[str, str]]]:
    chosen, skipped = [], []
    for name, mod in model.named_modules():
        if type(mod) not in (nn.Linear, nn.Conv2d):
            continue
        if filter_fn is not None and not filter_fn(mod, name):
            skipped.append((name, "excluded by filter_fn"))
        elif isinstance(mod, nn.Conv2d) and (mod.padding_mode != "zeros" or isinstance(mod.padding, str)):
            skipped.append((name, f"unsupported padding ({mod.padding_mode!r}, {mod.padding!r})"))
        else:
            chosen.append((name, mod))
    return chosen, skipped


def _collect_codebook(chosen, max_terms: int, skipped: list) -> tuple[Codebook | None, list]:
    """Whole-network codebook from the unique weight values of every eligible layer."""
    eligible, values = [], []
    for name, mod in chosen:
        uniq = torch.unique(mod.weight.detach().float().cpu())
        if uniq.numel() > 256:
            skipped.append((name, f"{uniq.numel()} unique weight values (at most 256 fit 8-bit codes)"))
            continue
        try:
            Codebook(uniq, max_terms=max_terms)
        except ValueError as exc:
            skipped.append((name, f"weights are not on a power-of-two codebook: {exc}"))
            continue
        eligible.append((name, mod))
        values.append(uniq)
    if not eligible:
        return None, []
    return Codebook(torch.unique(torch.cat(values)), max_terms=max_terms, max_entries=None), eligible


def convert(model: nn.Module, filter_fn=None, codebook: Codebook | None = None, *, strict: bool | None = None,
            max_terms: int = DEFAULT_MAX_TERMS, backend: str = "auto", shift_add: bool = False) -> ConversionReport:
    """Swap (in place) every ``nn.Linear`` / ``nn.Conv2d`` whose weights lie on a codebook.

    ``filter_fn(module, name) -> bool`` selects layers. With ``codebook=None`` the whole-network codebook
    is collected from the model's unique values, and layers that cannot be packed are skipped with the
    reason. With an explicit ``codebook`` (``strict`` defaults to True) a selected layer whose weights are
    off the codebook raises ValueError naming the layer, how many weights are off and by how much; with
    ``strict=False`` it is skipped instead. With ``shift_add=True`` every converted ``WFNLinear`` whose
    codebook is order-0 runs the int8 shift-add path (see :class:`WFNLinear`); the others keep the float
    path and the report says why (``converted[i]["shift_add"]``). Returns a :class:`ConversionReport`.
    """
    strict = codebook is not None if strict is None else strict
    chosen, skipped = _candidates(model, filter_fn)
    if codebook is None:
        codebook, chosen = _collect_codebook(chosen, max_terms, skipped)
    report = ConversionReport(codebook, skipped=skipped)
    for name, mod in chosen:
        try:
            new = (WFNLinear.from_linear(mod, codebook, name, backend) if isinstance(mod, nn.Linear)
                   else WFNConv2d.from_conv(mod, codebook, name, backend))
        except ValueError as exc:
            if strict:
                raise
            report.skipped.append((name, str(exc)))
            continue
        entry = {"name": name, "kind": type(mod).__name__, "bits": new.bits,
                 "codebook_size": int(new.codebook.numel())}
        if shift_add and isinstance(new, WFNLinear):
            try:
                new.enable_shift_add()
                entry["shift_add"] = True
            except ValueError as exc:
                entry["shift_add"] = f"no: {exc}"
        _set_submodule(model, name, new.to(mod.weight.device))
        report.converted.append(entry)
    return report


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    if name == "":
        raise ValueError("convert: the model itself is a Linear/Conv2d; wrap it in a container module")
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def wfn_modules(model: nn.Module) -> list[tuple[str, _WFNBase]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _WFNBase)]


def weight_bytes(model: nn.Module) -> dict[str, int]:
    """Weight memory of the model: packed WFN layers vs fp32, plus float parameters left as they are."""
    packed = dense = 0
    for _, m in wfn_modules(model):
        wb = m.weight_bytes()
        packed += wb["packed_bytes"]
        dense += wb["fp32_bytes"]
    other = sum(p.numel() * p.element_size() for p in model.parameters())
    other += sum(m.bias.numel() * 4 for _, m in wfn_modules(model) if m.bias is not None)
    return {"packed_bytes": packed, "fp32_bytes": dense, "other_float_bytes": other}


def set_backend(model: nn.Module, backend: str) -> None:
    """Set the kernel backend of every WFN module in ``model``."""
    for _, m in wfn_modules(model):
        m.set_backend(backend)
