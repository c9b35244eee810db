"""Every private torch API the package uses, in one place, behind a version check.

Two speed-ups need torch internals; both have a public-API path that is always correct:

1. **Direct kernel calls** (``redispatch_cpu``): a module forward on a plain CPU tensor calls the C++
   kernel through ``OpOverload.redispatch`` with the CPU dispatch key, skipping the Python front end and
   the autograd wrapper (~7 us per call). Guards use ``torch._C._len_torch_dispatch_stack`` and
   ``torch._C._functorch.is_functorch_wrapped_tensor``. Fallback: the public ``torch.ops.wfn.*`` call.
2. **oneDNN conv layout** (``wfn_kernels.nn.onednn_layout``): ``torch._C._nn.mkldnn_reorder_conv2d_weight``,
   ``torch.ops.mkldnn.data_ptr`` / ``_nbytes`` / ``_convolution_pointwise``. Fallback: the plain layout,
   with the reason reported by ``optimize_for_inference``.

Both are on only for the torch versions in :data:`TESTED_TORCH` (the versions the test suite has run on)
and when every attribute is present; ``WFN_TORCH_INTERNALS=0`` turns them off, ``=1`` forces them on for an
untested torch (at your own risk). :data:`REASON` says why they are off.
"""

from __future__ import annotations

import os

import torch

TESTED_TORCH = ("2.13",)  # major.minor versions the suite runs on (requirements-dev.txt pins 2.13.0)


def _version_reason() -> str:
    setting = os.environ.get("WFN_TORCH_INTERNALS", "")
    if setting == "0":
        return "disabled by WFN_TORCH_INTERNALS=0"
    version = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    if version not in TESTED_TORCH and setting != "1":
        return (f"torch {torch.__version__} is not a tested version ({', '.join(TESTED_TORCH)}); "
                "set WFN_TORCH_INTERNALS=1 to use the private-API fast paths anyway")
    return ""


def _missing(names) -> str:
    for owner, name in names:
        if not hasattr(owner, name):
            return f"torch {torch.__version__} lacks {getattr(owner, '__name__', owner)}.{name}"
    return ""


REASON = _version_reason()
DIRECT_CALL_OK = not REASON and not _missing(
    [(torch._C, "DispatchKeySet"), (torch._C, "_len_torch_dispatch_stack"), (torch._C, "_functorch")])
_CPU_KEYS = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU) if DIRECT_CALL_OK else None


def redispatch_cpu(op, *args):
    """Call ``op``'s CPU kernel directly (no autograd, no Python front end)."""
    return op.redispatch(_CPU_KEYS, *args)


def plain_eager_call(x: torch.Tensor) -> bool:
    """No tracing, compile, dispatch mode or functorch transform is active around ``x``."""
    return (not torch.compiler.is_compiling() and torch._C._len_torch_dispatch_stack() == 0
            and not torch._C._functorch.is_functorch_wrapped_tensor(x))


def onednn_unavailable_reason() -> str:
    """'' when the private oneDNN calls can be used, else why not."""
    if REASON:
        return REASON
    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN (mkldnn)"
    missing = _missing([(torch._C._nn, "mkldnn_reorder_conv2d_weight")])
    for name in ("data_ptr", "_nbytes", "_convolution_pointwise"):
        missing = missing or ("" if hasattr(torch.ops.mkldnn, name) else
                              f"torch.ops.mkldnn.{name} is missing in torch {torch.__version__}")
    return missing


def mkldnn_reorder_conv_weight(weight: torch.Tensor, padding, stride, dilation, groups: int, input_shape):
    """oneDNN's own reorder of a plain fp32 conv weight into the blocked layout it picks for these shapes."""
    return torch._C._nn.mkldnn_reorder_conv2d_weight(weight.to_mkldnn(), list(padding), list(stride),
                                                     list(dilation), groups, list(input_shape))


def mkldnn_buffer(t: torch.Tensor) -> tuple[int, int]:
    """(address, bytes) of an mkldnn tensor's buffer."""
    return int(torch.ops.mkldnn.data_ptr(t)), int(torch.ops.mkldnn._nbytes(t))


def mkldnn_conv(x: torch.Tensor, weight, bias, padding, stride, dilation, groups: int,
                relu: bool = False) -> torch.Tensor:
    """fp32 conv2d with a weight already in oneDNN's blocked layout (no reorder); ``relu``: oneDNN's fused
    ReLU post-op on the output."""
    return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, list(padding), list(stride), list(dilation),
                                                   groups, "relu" if relu else "none", [], "")
