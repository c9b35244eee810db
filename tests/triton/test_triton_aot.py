"""The Triton kernels compile for real GPUs (sm_90, sm_80) on this GPU-less machine, with the intended code:
128-bit loads of packed codes in the batch-1 GEMV, tensor-core MMA for fp16/bf16 GEMM tiles, and no
MMA (exact IEEE fp32 FMA, not TF32) for float32 activations."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="triton is not installed")
pytest.importorskip("triton.backends.nvidia", reason="triton has no NVIDIA backend")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path_factory.mktemp("triton_cache"))  # really compile, no stale cache
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    script = Path(__file__).with_name("aot_compile.py")
    proc = subprocess.run([sys.executable, str(script), "90", "80"], env=env, capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).parents[2])
    assert proc.returncode == 0, f"AOT compile failed:\n{proc.stderr[-4000:]}"
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_every_variant_compiles(compiled):
    assert len(compiled) == 11 + 6  # + the int8 mode's gemv, narrow and int16 gemm, per arch
    assert {r["arch"] for r in compiled} == {90, 80}
    assert {r["bits"] for r in compiled if r["arch"] == 90} == {2, 4, 8}
    assert all(r["cubin_bytes"] > 0 for r in compiled)


def test_gemv_uses_128bit_packed_loads(compiled):
    gemv_m1 = [r for r in compiled if r["kernel"] == "codebook_gemv_kernel" and r["m"] == 1]
    assert gemv_m1 and all(r["vector_loads"] for r in gemv_m1), gemv_m1


def test_gemm_uses_tensor_cores_only_for_half_inputs(compiled):
    gemm = [r for r in compiled if r["kernel"] == "codebook_gemm_kernel"]
    assert all(r["mma"] == (r["dtype"] != "fp32") for r in gemm), gemm


def test_int8_mode_gemm_uses_integer_tensor_cores(compiled):
    gemm = [r for r in compiled if r["kernel"] == "int_gemm_kernel"]
    assert len(gemm) == 4 and all(r["int_mma"] for r in gemm), gemm


def test_import_without_gpu_or_interpreter_then_clear_error():
    """Importing wfn_kernels.ops.triton needs only triton (no GPU); without CUDA or the interpreter a launch
    says why, and the front end reports the backend unavailable, naming the reason."""
    code = (
        "import torch, wfn_kernels as wk\n"
        "import wfn_kernels.ops.triton as wt\n"
        "assert hasattr(torch.ops.wfn, 'codebook_linear_triton')\n"
        "from wfn_kernels.format.packing import pack_codes\n"
        "x = torch.ones(1, 4); p = pack_codes(torch.zeros(2, 4, dtype=torch.long), 4); cb = torch.ones(1)\n"
        "try:\n"
        "    torch.ops.wfn.codebook_linear_triton(x, p, cb, 4, 4)\n"
        "except RuntimeError as e:\n"
        "    print('launch:', e)\n"
        "try:\n"
        "    wk.codebook_linear(x, p, cb, 4, backend='triton')\n"
        "except wk.ops.BackendUnavailableError as e:\n"
        "    print('front end:', e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "launch: codebook_linear_triton: x is on cpu; Triton kernels need a CUDA device" in proc.stdout
    assert "front end: backend 'triton' is unavailable: no CUDA device" in proc.stdout
