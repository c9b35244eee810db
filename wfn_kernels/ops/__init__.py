"""The codebook ops and their kernels: schemas, backend dispatch, the reference spec, shift-add, Triton.

- ``schemas.py``: ``torch.library`` definitions of ``wfn::codebook_linear`` / ``wfn::codebook_conv2d``
  (reference default kernel, fake kernels, autograd). The C++ CPU/CUDA kernels (``csrc/``, built as
  ``wfn_kernels._C``) register onto these schemas.
- ``backends.py``: which backends loaded (``available_backends``) and which runs a call.
- ``dispatch.py``: the functional front end ``codebook_linear`` / ``codebook_conv2d``.
- ``reference.py``: the pure-PyTorch specification and the shared argument checks.
- ``shift_add.py``: ``wfn::shift_add_linear``, the multiplier-free integer spec.
- ``int8.py`` / ``bf16.py``: the int8 and bf16 compute modes (``wfn::int_linear``, ``wfn::int8_*``,
  ``wfn::bf16_*``): reference spec, error bounds, front ends.
- ``triton/``: the Triton kernels (``wfn::codebook_linear_triton``), imported only on demand.

May import: ``wfn_kernels.format``. Never ``wfn_kernels.nn``, fixing or workflows.
"""

from . import schemas  # noqa: F401  (defines the ops)
from . import bf16, int8  # noqa: F401  (define the compute-mode ops)
from .backends import (Backend, BackendUnavailableError, available_backends, extension_has_cuda, extension_loaded,
                       extension_reason, resolve_backend)
from .backends import _C, _C_REASON, _triton_status  # noqa: F401  (read by the tests and bench scripts)
from .dispatch import _pair  # noqa: F401  (shared with nn.modules)
from .dispatch import codebook_conv2d, codebook_linear

__all__ = ["Backend", "BackendUnavailableError", "available_backends", "codebook_conv2d", "codebook_linear",
           "extension_has_cuda", "extension_loaded", "extension_reason", "resolve_backend"]
