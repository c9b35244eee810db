"""The op schemas (namespace ``wfn``), their fake (meta) kernels and autograd formulas.

Each op is defined once here with the pure-PyTorch reference (reference.py) as its
``CompositeExplicitAutograd`` ("default") kernel, so it exists on every device even without ``_C``:

- ``wfn::codebook_linear(x, packed, codebook, bits, in_features, bias)``: see reference.py.
- ``wfn::codebook_conv2d(x, packed, codebook, bits, weight_shape, bias, stride, padding, dilation, groups)``.

The C++ extension (``wfn_kernels._C``) attaches CPU (and, when built with CUDA, CUDA) kernels to the same
schemas with ``TORCH_LIBRARY_IMPL``. ``wfn::shift_add_linear`` is defined in shift_add.py and
``wfn::codebook_linear_triton`` in triton/op.py. docs/design.md shows the wiring.
"""

from __future__ import annotations

import torch
from torch.nn.grad import conv2d_input

from . import reference as ref

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
    return torch.empty(x.shape[0], weight_shape[0], *out_hw, dtype=x.dtype, device=x.device,
                       memory_format=ref.memory_format_of(x))


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
