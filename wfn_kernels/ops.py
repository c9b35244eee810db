"""The codebook ops: schemas (torch.library), fake kernels, autograd, backends and dispatch.

Ops (namespace ``wfn``), each defined once here with the pure-PyTorch reference as its
``CompositeExplicitAutograd`` ("default") kernel, so they exist on every device even without ``_C``:

- ``wfn::codebook_linear(x, packed, codebook, bits, in_features, bias)``: see reference.py.
- ``wfn::codebook_conv2d(x, packed, codebook, bits, weight_shape, bias, stride, padding, dilation, groups)``.

The C++ extension (``wfn_kernels._C``) attaches CPU (and, when built with CUDA, CUDA) kernels to the
same schemas with ``TORCH_LIBRARY_IMPL``. Triton is a separate op (``wfn::codebook_linear_triton``,
in ``wfn_kernels.triton``) so Triton and CUDA C++ can be compared on one GPU.

Backends: ``auto`` (fastest available for the device), ``reference`` (pure PyTorch, always there),
``extension`` (C++/CUDA kernels through the op) and ``triton``. An explicitly requested backend that is
unavailable raises :class:`BackendUnavailableError` naming why; nothing falls back silently.
"""

from __future__ import annotations

import enum
import os

import torch
from torch.nn.grad import conv2d_input

from . import reference as ref


class Backend(str, enum.Enum):
    AUTO = "auto"
    REFERENCE = "reference"
    EXTENSION = "extension"
    TRITON = "triton"

    @classmethod
    def parse(cls, value) -> Backend:
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"unknown backend {value!r}; choose one of {[b.value for b in cls]}") from None


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend cannot run here (the message says why)."""


_lib = torch.library.Library("wfn", "DEF")  # noqa: TOR901 (kept alive for the process lifetime)
_lib.define("codebook_linear(Tensor x, Tensor packed, Tensor codebook, int bits, int in_features, "
            "Tensor? bias=None) -> Tensor")
_lib.define("codebook_conv2d(Tensor x, Tensor packed, Tensor codebook, int bits, int[] weight_shape, "
            "Tensor? bias, int[] stride, int[] padding, int[] dilation, int groups) -> Tensor")
_lib.impl("codebook_linear", ref.codebook_linear, "CompositeExplicitAutograd")
_lib.impl("codebook_conv2d", ref.codebook_conv2d, "CompositeExplicitAutograd")


@torch.library.register_fake("wfn::codebook_linear")
def _codebook_linear_fake(x, packed, codebook, bits, in_features, bias=None):
    torch._check(x.dim() == 2, lambda: f"x must be 2-D, got {x.dim()}-D")
    torch._check(x.shape[1] == in_features, lambda: "x columns must equal in_features")
    return x.new_empty(x.shape[0], packed.shape[0])


@torch.library.register_fake("wfn::codebook_conv2d")
def _codebook_conv2d_fake(x, packed, codebook, bits, weight_shape, bias, stride, padding, dilation, groups):
    out_hw = [(x.shape[2 + i] + 2 * padding[i] - dilation[i] * (weight_shape[2 + i] - 1) - 1) // stride[i] + 1
              for i in range(2)]
    return x.new_empty(x.shape[0], weight_shape[0], *out_hw)


def _linear_setup(ctx, inputs, output):
    x, packed, codebook, bits, in_features, bias = inputs
    ctx.save_for_backward(packed, codebook)
    ctx.meta = (bits, in_features, x.dtype, bias is not None)


def _linear_backward(ctx, grad):
    packed, codebook = ctx.saved_tensors
    bits, in_features, dtype, has_bias = ctx.meta
    w = ref.decode_weight(packed, codebook, bits, in_features)
    grad_x = (grad.float() @ w).to(dtype) if ctx.needs_input_grad[0] else None
    grad_b = grad.float().sum(0) if has_bias and ctx.needs_input_grad[5] else None
    return grad_x, None, None, None, None, grad_b


def _conv_setup(ctx, inputs, output):
    x, packed, codebook, bits, weight_shape, bias, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(packed, codebook)
    ctx.meta = (bits, list(weight_shape), list(x.shape), x.dtype, bias is not None,
                list(stride), list(padding), list(dilation), groups)


def _conv_backward(ctx, grad):
    packed, codebook = ctx.saved_tensors
    bits, wshape, xshape, dtype, has_bias, stride, padding, dilation, groups = ctx.meta
    k = wshape[1] * wshape[2] * wshape[3]
    w = ref.decode_weight(packed, codebook, bits, k).reshape(wshape)
    grad_x = None
    if ctx.needs_input_grad[0]:
        grad_x = conv2d_input(xshape, w, grad.float(), stride, padding, dilation, groups).to(dtype)
    grad_b = grad.float().sum((0, 2, 3)) if has_bias and ctx.needs_input_grad[5] else None
    return grad_x, None, None, None, None, grad_b, None, None, None, None


torch.library.register_autograd("wfn::codebook_linear", _linear_backward, setup_context=_linear_setup)
torch.library.register_autograd("wfn::codebook_conv2d", _conv_backward, setup_context=_conv_setup)


# ---------------------------------------------------------------------------------------------------
# Backends: what loaded and why not.

def _load_extension():
    if os.environ.get("WFN_DISABLE_EXT") == "1":
        return None, "disabled by WFN_DISABLE_EXT=1"
    try:
        from . import _C  # noqa: F401  (registers the C++ kernels on import)
    except ImportError as exc:
        return None, (f"wfn_kernels._C is not built ({exc}); reinstall without WFN_BUILD_EXT=0 "
                      "(pip install --no-build-isolation -e .)")
    return _C, ""


_C, _C_REASON = _load_extension()


def extension_has_cuda() -> bool:
    return _C is not None and bool(_C.built_with_cuda())


def _triton_status() -> tuple[bool, str]:
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        return False, f"triton is not installed ({exc})"
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        return False, "no CUDA device (set TRITON_INTERPRET=1 to run Triton on CPU, for correctness only)"
    try:
        from . import triton as _wt  # noqa: F401
    except ImportError as exc:
        return False, f"wfn_kernels.triton failed to import ({exc})"
    return True, ""


def available_backends() -> dict[str, dict[str, object]]:
    """Which backends can run, per device, and why not. ``{name: {"available": bool, "reason": str,
    "devices": [...]}}``."""
    cuda = torch.cuda.is_available()
    out = {"reference": {"available": True, "reason": "", "devices": ["cpu"] + (["cuda"] if cuda else [])}}
    ext_devices = []
    reason = _C_REASON
    if _C is not None:
        ext_devices.append("cpu")
        if extension_has_cuda() and cuda:
            ext_devices.append("cuda")
        reason = f"cpu dispatch level: {_C.cpu_capability()}"
    out["extension"] = {"available": _C is not None, "reason": reason, "devices": ext_devices}
    ok, why = _triton_status()
    out["triton"] = {"available": ok, "reason": why, "devices": (["cuda"] if cuda else ["cpu"]) if ok else []}
    return out


def resolve_backend(backend, device: torch.device) -> Backend:
    """Turn ``auto`` into a concrete backend for ``device``; raise if an explicit one cannot run there."""
    b = Backend.parse(backend)
    dev = torch.device(device).type
    if b is Backend.AUTO:
        if _C is not None and (dev == "cpu" or (dev == "cuda" and extension_has_cuda())):
            return Backend.EXTENSION
        if dev == "cuda" and _triton_status()[0]:
            return Backend.TRITON
        return Backend.REFERENCE
    if b is Backend.EXTENSION:
        if _C is None:
            raise BackendUnavailableError(f"backend 'extension' is unavailable: {_C_REASON}")
        if dev == "cuda" and not extension_has_cuda():
            raise BackendUnavailableError("backend 'extension' has no CUDA kernels: _C was built without "
                                          "CUDA (torch without CUDA, or WFN_BUILD_CUDA=0)")
        if dev not in ("cpu", "cuda"):
            raise BackendUnavailableError(f"backend 'extension' has no kernels for device {dev!r}")
    if b is Backend.TRITON:
        ok, why = _triton_status()
        if not ok:
            raise BackendUnavailableError(f"backend 'triton' is unavailable: {why}")
    return b


# ---------------------------------------------------------------------------------------------------
# Public front end: validate once (same message for every backend), then dispatch.

def codebook_linear(x, packed, codebook, bits: int, bias=None, *, in_features: int | None = None,
                    backend="auto", validate: bool = True) -> torch.Tensor:
    """y = x @ codebook[codes].T (+ bias).

    x: (..., K) float32/bfloat16/float16 (any strides); packed: uint8 (N, ceil(K*bits/8));
    codebook: float32 (C,), C <= 2**bits, strictly increasing; bias: (N,) or None. Returns (..., N) in
    x.dtype, accumulated in float32. ``validate=False`` skips the O(C) codebook and O(NK) code-range
    checks (modules validate once at construction); shape/dtype/device checks always run.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    k = x.shape[-1] if in_features is None else in_features
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1]) if x.dim() != 2 else x
    ref.check_linear_args(x2, packed, codebook, bits, k, bias, full=validate)
    b = resolve_backend(backend, x.device)
    if b is Backend.REFERENCE:
        y = ref.codebook_linear(x2, packed, codebook, bits, k, bias)
    elif b is Backend.EXTENSION:
        y = torch.ops.wfn.codebook_linear(x2.contiguous(), packed.contiguous(), codebook.contiguous(),
                                          bits, k, bias)
    else:
        y = torch.ops.wfn.codebook_linear_triton(x2.contiguous(), packed.contiguous(),
                                                 codebook.contiguous(), bits, k, bias)
    return y.reshape(*lead, y.shape[-1])


def codebook_conv2d(x, packed, codebook, bits: int, weight_shape, bias=None, stride=(1, 1), padding=(0, 0),
                    dilation=(1, 1), groups: int = 1, *, backend="auto", validate: bool = True) -> torch.Tensor:
    """conv2d(x, codebook[codes].reshape(weight_shape), bias, stride, padding, dilation, groups).

    x: (B, C, H, W) float32/bfloat16/float16; weight_shape: (O, C/groups, kh, kw); returns (B, O, H', W')
    in x.dtype. The Triton backend has no conv kernel: ``backend='triton'`` raises.
    """
    ref.check_conv2d_args(x, packed, codebook, bits, list(weight_shape), bias, groups, full=validate)
    b = resolve_backend(backend, x.device)
    args = (list(weight_shape), bias, _pair(stride), _pair(padding), _pair(dilation), groups)
    if b is Backend.REFERENCE:
        return ref.codebook_conv2d(x, packed, codebook, bits, *args)
    if b is Backend.TRITON:
        raise BackendUnavailableError("backend 'triton' has no conv2d kernel; use 'extension' or 'reference'")
    return torch.ops.wfn.codebook_conv2d(x.contiguous(), packed.contiguous(), codebook.contiguous(), bits, *args)


def _pair(v) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(i) for i in v]
