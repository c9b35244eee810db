"""Shared benchmark helpers: timing (medians), environment header, measured read bandwidth."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch

from wfn_kernels.timing import interleaved_medians, interleaved_times, median_seconds  # noqa: F401  (re-exported)


def read_bandwidth_gbs(megabytes: int = 512, repeats: int = 10) -> float:
    """Measured read bandwidth: a large fp32 ``torch.sum`` (reads every byte once), GB/s (1e9 B/s)."""
    n = megabytes * (1 << 20) // 4
    buf = torch.ones(n)
    t = median_seconds(lambda: buf.sum(), repeats=repeats)
    return 4 * n / t / 1e9


def stream_reads(buf: torch.Tensor) -> list:
    """The two plain one-core reads of ``buf`` (torch.sum, and wfn_cpu.stream_read: an XOR over every word); the
    faster one's time is the benchmarks' weight-streaming reference, so a slow reduction cannot flatter it."""
    import wfn_kernels  # noqa: F401  (registers the extension's ops)

    return [buf.sum, lambda: torch.ops.wfn_cpu.stream_read(buf)]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                keep = ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512vbmi", "avx512_vnni", "avx512_bf16",
                        "amx_bf16", "amx_int8"]
                return " ".join(f for f in keep if f in flags)
    except OSError:
        pass
    return "unknown"


def git_commit() -> str:
    try:
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def environment(bandwidth_gbs: float | None = None) -> dict:
    """Environment header for every results file."""
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    import wfn_kernels

    ext = wfn_kernels.available_backends()["extension"]
    env = {
        "commit": git_commit(), "python": platform.python_version(), "torch": torch.__version__,
        "triton": triton_version, "cpu": cpu_model(), "cpu_flags": cpu_flags(), "threads": torch.get_num_threads(),
        "extension": ext["reason"] if ext["available"] else f"unavailable: {ext['reason']}",
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", ""),
    }
    if bandwidth_gbs is not None:
        env["read_bandwidth_gbs"] = round(bandwidth_gbs, 2)
    return env
