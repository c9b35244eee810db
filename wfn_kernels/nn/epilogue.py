"""The output epilogue a ``WFNConv2d`` can carry: an eval BatchNorm folded into a per-channel affine, then an
optional ReLU (set by ``wfn_kernels.nn.fuse.fuse_batchnorm``; the int8 mode's NHWC kernel applies it in
registers, other paths as separate passes with the same arithmetic)."""

from __future__ import annotations

import torch

from ..ops import int8 as int8_ops


class FoldedEpilogue:
    """Mixin for WFNConv2d: ``post_scale`` / ``post_shift`` buffers (not saved) and ``post_relu``."""

    def _init_epilogue(self) -> None:
        self.register_buffer("post_scale", None, persistent=False)
        self.register_buffer("post_shift", None, persistent=False)
        self.post_relu = False
        self.register_state_dict_pre_hook(_refuse_folded_state)

    def fold_post(self, scale: torch.Tensor | None, shift: torch.Tensor | None, relu: bool = False) -> None:
        """Apply ``y * scale[c] + shift[c]`` (an eval BatchNorm folded into the conv: multiply, then add) and,
        with ``relu``, ``max(y, 0)`` to this conv's output. In the int8 mode the NHWC kernel does it in its
        epilogue, on the output still in registers; a float conv on the oneDNN layout inside the oneDNN conv
        (weights scaled as decoded, shift as bias, ReLU post-op); other paths as separate passes. Inference only: a module
        with a folded epilogue refuses ``state_dict()`` (save the model before fusing)."""
        n = self.out_channels
        if (scale is None) != (shift is None):
            raise ValueError(f"{self._describe()}: fold_post needs both scale and shift, or neither")
        for name, t in (("scale", scale), ("shift", shift)):
            if t is not None and (not isinstance(t, torch.Tensor) or t.dim() != 1 or t.numel() != n
                                  or not t.dtype.is_floating_point):
                raise ValueError(f"{self._describe()}: fold_post {name} must be a 1-D float tensor of "
                                 f"out_channels={n} values, got {t!r:.80}")
        dev = self.packed.device
        if scale is None and relu:  # a ReLU alone: the identity affine, so the kernel takes one form
            scale, shift = torch.ones(n), torch.zeros(n)
        self.post_scale = None if scale is None else scale.detach().float().to(dev).contiguous()
        self.post_shift = None if shift is None else shift.detach().float().to(dev).contiguous()
        self.post_relu = bool(relu)

    def _has_post(self) -> bool:
        return self.post_scale is not None or self.post_relu

    def _post(self, y: torch.Tensor) -> torch.Tensor:
        if not self._has_post():
            return y
        return int8_ops.apply_post(y, self.post_scale, self.post_shift, self.post_relu).to(y.dtype)


def _refuse_folded_state(module, prefix, keep_vars) -> None:
    """A folded BatchNorm is not part of the saved state: refuse rather than save a model that loses it."""
    if module._has_post():
        raise ValueError(f"{prefix.rstrip('.') or 'module'}: {module._describe()} has a BatchNorm / ReLU folded into "
                         "its output (wk.fuse_batchnorm), which state_dict() cannot hold; save the model before "
                         "fusing and fuse again after loading")
