"""``wfn::codebook_linear_triton``: the Triton kernels as a torch.library op.

A ``torch.library.custom_op`` (opaque to Inductor) rather than ``triton_op``: under TRITON_INTERPRET=1
``triton_op`` traces the interpreted kernel with fake tensors and fails ``opcheck`` and
``torch.compile``, while a custom_op with a fake kernel passes both (see the kernel-anchors notes, section 7).
The schema matches ``wfn::codebook_linear`` so the two backends are interchangeable.
"""

from __future__ import annotations

import torch

from .. import reference as ref
from .launcher import codebook_linear_triton_launch

SCHEMA = ("(Tensor x, Tensor packed, Tensor codebook, int bits, int in_features, Tensor? bias=None) "
          "-> Tensor")


@torch.library.custom_op("wfn::codebook_linear_triton", mutates_args=(), schema=SCHEMA)
def codebook_linear_triton(x: torch.Tensor, packed: torch.Tensor, codebook: torch.Tensor, bits: int,
                           in_features: int, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = x @ codebook[codes].T (+ bias): x (M, K) fp32/bf16/fp16, packed uint8 (N, ceil(K*bits/8)),
    codebook float32 (C,), bias (N,) or None -> (M, N) in x.dtype (float32 accumulation)."""
    return codebook_linear_triton_launch(x, packed, codebook, bits, in_features, bias)


@codebook_linear_triton.register_fake
def _fake(x, packed, codebook, bits, in_features, bias=None):
    torch._check(x.dim() == 2, lambda: f"x must be 2-D (M, K), got {x.dim()}-D")
    torch._check(x.shape[1] == in_features, lambda: f"x has {x.shape[1]} columns, expected {in_features}")
    return x.new_empty(x.shape[0], packed.shape[0])


def _setup_context(ctx, inputs, output):
    x, packed, codebook, bits, in_features, bias = inputs
    ctx.save_for_backward(packed, codebook)
    ctx.meta = (bits, in_features, x.dtype, bias is not None)


def _backward(ctx, grad):
    """grad_x = grad @ W (W decoded in float32), grad_bias = grad summed over rows; none for codes/codebook."""
    packed, codebook = ctx.saved_tensors
    bits, in_features, dtype, has_bias = ctx.meta
    grad_x = None
    if ctx.needs_input_grad[0]:
        w = ref.decode_weight(packed, codebook, bits, in_features)
        grad_x = (grad.float() @ w).to(dtype)
    grad_b = grad.float().sum(0) if has_bias and ctx.needs_input_grad[5] else None
    return grad_x, None, None, None, None, grad_b


codebook_linear_triton.register_autograd(_backward, setup_context=_setup_context)
