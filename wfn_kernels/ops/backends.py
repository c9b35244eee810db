"""Backends: what loaded, why not, and which one runs a call.

``auto`` (fastest available for the device), ``reference`` (pure PyTorch, always there), ``extension``
(C++/CUDA kernels through the op) and ``triton``. An explicitly requested backend that is unavailable
raises :class:`BackendUnavailableError` naming why; nothing falls back silently.
"""

from __future__ import annotations

import enum
import os

import torch


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


def _load_extension():
    if os.environ.get("WFN_DISABLE_EXT") == "1":
        return None, "disabled by WFN_DISABLE_EXT=1"
    try:
        from .. import _C  # noqa: F401  (registers the C++ kernels on import)
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


def cpu_compute_note(mode: str) -> str:
    """Why a compute mode gains little on this CPU with the extension ("" where it has the instructions):
    int8 without int8 dot-product units (VNNI / AMX-INT8), bf16 without bf16 arithmetic."""
    if _C is None or not hasattr(torch.ops.wfn_cpu, "fp32_int_gemm"):
        return ""
    if mode == "int8" and torch.ops.wfn_cpu.fp32_int_gemm():
        return ("this CPU has no int8 dot-product instructions (VNNI / AMX-INT8): int8 convs and linear layers "
                "run AVX2 vpmaddubsw kernels, which gain less over the float mode than on CPUs with VNNI, and "
                "layers whose integer weights need int16 (values spanning more than 8 bits of power-of-two "
                "steps, common in the paper's configuration) run no faster than in the float mode (a model "
                "fixed that way: 0.82-1.07x of fp32 on an AMD Zen 3, bench/results/fixed_model_modes_zen3.md)")
    if mode == "bf16" and torch.ops.wfn_cpu.bf16_capability().startswith("fp32 kernels"):
        return ("this CPU has no bf16 arithmetic: the bf16 mode rounds activations to bf16 and runs the fp32 "
                "kernels (same speed as the float mode)")
    return ""


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
        if hasattr(torch.ops.wfn_cpu, "amx_status"):
            reason += f"; AMX tiles: {torch.ops.wfn_cpu.amx_status()}"
        if hasattr(torch.ops.wfn_cpu, "panel_capability"):
            reason += f"; AVX-512 panel GEMM: {torch.ops.wfn_cpu.panel_capability()}"
        for mode in ("int8", "bf16"):
            note = cpu_compute_note(mode)
            if note:
                reason += f"; {mode} mode: {note}"
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


def extension_loaded() -> bool:
    """Whether the C++ extension ``wfn_kernels._C`` is loaded (its kernels registered)."""
    return _C is not None


def extension_reason() -> str:
    """Why the extension is not loaded ('' when it is)."""
    return _C_REASON
