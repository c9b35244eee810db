"""Every CUDA source compiles with nvcc for sm_80 and sm_90 (nothing CUDA runs here: no GPU).

- each csrc/cuda/*.cu compiles (-c, -std=c++17, -O3) for both targets, with torch's extension flags;
- the .cu kernels stay free of torch headers (plain CUDA C++ behind csrc/cuda/codebook_cuda.h);
- csrc/cuda/bindings.cpp passes a C++ syntax check against torch's headers and the CUDA runtime headers;
- tests/cuda/harness.cu links against the kernel objects into a standalone binary, which runs (and must
  report all cases bit exact) only where a GPU is present;
- the same harness and kernels, built with g++ against the CPU emulation in tests/cuda/emu (threads as
  fibers, barriers, warp shuffles), run here: every GEMV/SIMT-GEMM/decode path bit exact (not WMMA), and a
  deliberately broken kernel is caught.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CUDA_DIR = ROOT / "csrc" / "cuda"
CU_SOURCES = sorted(CUDA_DIR.glob("*.cu"))
ARCHES = ("80", "90")


def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    candidate = Path(home) / "bin" / "nvcc"
    return str(candidate) if candidate.exists() else None


def _cuda_include() -> Path | None:
    for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda", "/opt/cuda"):
        if home and (Path(home) / "include" / "cuda_runtime.h").exists():
            return Path(home) / "include"
    return None


def _cuobjdump() -> str | None:
    """cuobjdump from the toolkit, else the copy Triton bundles; None when neither exists."""
    found = shutil.which("cuobjdump")
    if found:
        return found
    try:
        import triton
    except ImportError:
        return None
    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    return str(bundled) if bundled.exists() else None


NVCC = _nvcc()
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found on PATH or in $CUDA_HOME/bin")


def _run(cmd, timeout=600):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    """Compile each .cu once for both targets (setup.py's nvcc flags, minus -lineinfo); {name: .o path}."""
    if NVCC is None:
        pytest.skip("nvcc not found on PATH or in $CUDA_HOME/bin")
    out = tmp_path_factory.mktemp("cuda_objects")
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHES]
    built = {}
    for src in CU_SOURCES:
        obj = out / (src.stem + ".o")
        _run([NVCC, "-std=c++17", "-O3", "-Xcompiler", "-fPIC", "--threads", "2", *gencode,
              "-I", str(CUDA_DIR), "-c", str(src), "-o", str(obj)])
        built[src.name] = obj
    return built


def test_there_are_cuda_sources():
    assert {p.name for p in CU_SOURCES} >= {"gemv.cu", "gemm.cu", "dispatch.cu"}
    assert (CUDA_DIR / "codebook_cuda.h").exists() and (CUDA_DIR / "bindings.cpp").exists()


@needs_nvcc
@pytest.mark.parametrize("name", [p.name for p in CU_SOURCES])
def test_cu_compiles_for_sm80_and_sm90(objects, name):
    obj = objects[name]
    assert obj.stat().st_size > 0
    tool = _cuobjdump()
    if tool is None:
        pytest.skip(f"{name} compiled; no cuobjdump to list its cubins")
    listing = _run([tool, "--list-elf", str(obj)]).stdout
    assert all(f"sm_{a}" in listing for a in ARCHES), listing


@needs_nvcc
def test_launch_api_symbols_defined(objects):
    syms = _run(["nm", "-C", "--defined-only", str(objects["dispatch.cu"])]).stdout
    assert "wfn::cuda::codebook_linear_launch" in syms and "wfn::cuda::codebook_decode_launch" in syms


def test_kernels_free_of_torch_headers():
    for src in [*CU_SOURCES, *CUDA_DIR.glob("*.cuh"), CUDA_DIR / "codebook_cuda.h"]:
        includes = re.findall(r'#include\s+[<"]([^>"]+)', src.read_text())
        torchy = [i for i in includes if i.split("/")[0] in ("torch", "ATen", "c10")]
        assert not torchy, f"{src.name} includes torch headers {torchy}"


def test_bindings_syntax_check(tmp_path):
    """bindings.cpp against torch's headers. A CPU-only torch ships c10/cuda but not the build-generated
    c10/cuda/impl/cuda_cmake_macros.h; a stub of that one file stands in for it."""
    torch = pytest.importorskip("torch")
    from torch.utils.cpp_extension import include_paths

    cuda_include = _cuda_include()
    if cuda_include is None:
        pytest.skip("CUDA runtime headers not found ($CUDA_HOME, /usr/local/cuda, /opt/cuda)")
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    stub = tmp_path / "c10" / "cuda" / "impl"
    stub.mkdir(parents=True)
    (stub / "cuda_cmake_macros.h").write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
    incs = [f"-I{p}" for p in include_paths()] + [f"-I{tmp_path}", f"-I{cuda_include}", f"-I{CUDA_DIR}"]
    _run([cxx, "-std=c++17", "-fsyntax-only", "-DWFN_WITH_CUDA", *incs, str(CUDA_DIR / "bindings.cpp")])
    assert torch.__version__


@needs_nvcc
def test_harness_links_and_runs_where_a_gpu_is(objects, tmp_path):
    exe = tmp_path / "harness"
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHES]
    _run([NVCC, "-std=c++17", "-O2", *gencode, "-I", str(CUDA_DIR), str(ROOT / "tests" / "cuda" / "harness.cu"),
          *map(str, objects.values()), "-o", str(exe)])
    assert exe.exists()
    if not _gpu_present():
        pytest.skip("harness built; no GPU here to run it")
    out = _run([str(exe)], timeout=300).stdout
    assert "ALL PASSED" in out, out


def _gpu_present() -> bool:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    return subprocess.run([smi, "-L"], capture_output=True).returncode == 0


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))


EMU_DIR = ROOT / "tests" / "cuda" / "emu"
LAUNCH = re.compile(r"(\w+<[^<>;]*>)<<<([^;]*?)>>>\(")


def _emu_compile(src_text: str, name: str, out: Path) -> Path:
    """One translation unit for the CPU emulator: `k<<<grid, block, smem, stream>>>(args)` is rewritten to
    `emu::Launch(grid, block, smem, stream).run(k, args)`, then g++ builds an object."""
    text, launches = LAUNCH.subn(r"emu::Launch(\2).run(\1, ", src_text)
    assert launches == EXPECTED_LAUNCHES.get(name, 0), f"{name}: rewrote {launches} kernel launches"
    cpp = out / (Path(name).stem + ".cpp")
    cpp.write_text(text)
    obj = cpp.with_suffix(".o")
    _run([shutil.which("g++"), "-std=c++20", "-O2", f"-I{EMU_DIR}", f"-I{CUDA_DIR}", "-c", str(cpp), "-o", str(obj)])
    return obj


EXPECTED_LAUNCHES = {"gemv.cu": 1, "gemm.cu": 2, "dispatch.cu": 3}


@pytest.fixture(scope="module")
def emulated_objects(tmp_path_factory):
    """{source name: object} for every kernel .cu and the harness, built for the CPU emulator."""
    if shutil.which("g++") is None:
        pytest.skip("no g++ for the CUDA emulation")
    out = tmp_path_factory.mktemp("cuda_emu")
    objs = {src.name: _emu_compile(src.read_text(), src.name, out) for src in CU_SOURCES}
    objs["harness.cu"] = _emu_compile((ROOT / "tests" / "cuda" / "harness.cu").read_text(), "harness.cu", out)
    return objs


def _emu_link(objs: dict, out: Path) -> Path:
    exe = out / "harness_emu"
    _run([shutil.which("g++"), *map(str, objs.values()), "-o", str(exe)])
    return exe


def _run_emulated(exe: Path, sm_major: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, WFN_EMU_SM_MAJOR=str(sm_major))
    return subprocess.run([str(exe), "--quick"], capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize("sm_major", [8, 7], ids=["sm8-wmma", "sm7-simt"])
def test_kernels_bit_exact_under_cpu_emulation(emulated_objects, tmp_path, sm_major):
    """sm 8: 16-bit GEMMs on the WMMA kernel (emulated fragments); sm 7: on the SIMT kernel. Every case is
    exactly summable, so GEMV (all register shapes, vector and byte-wise paths), GEMMs and decode must match
    the host reference bit for bit."""
    proc = _run_emulated(_emu_link(emulated_objects, tmp_path), sm_major)
    passed = [line for line in proc.stdout.splitlines() if line.startswith("PASS ")]
    assert proc.returncode == 0 and "ALL PASSED" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert len(passed) == 3 * 3 * 5 * 3


@pytest.mark.parametrize("file,old,new", [
    ("gemv.cu", "(word >> ((e4 + e) * BITS))", "(word >> ((e4 + e + 1) * BITS))"),
    ("gemm.cu", "ws + (wn + j * 16) * LD + kk, LD)", "ws + (wn + j * 16) * LD + kk / 2, LD)"),
], ids=["gemv-shift", "wmma-operand"])
def test_cpu_emulation_catches_a_broken_kernel(emulated_objects, tmp_path, file, old, new):
    """The emulated check has teeth: a planted off-by-one in the GEMV decode or the WMMA operand must fail."""
    text = (CUDA_DIR / file).read_text()
    assert old in text, f"mutation target not found in {file}"
    objs = dict(emulated_objects, **{file: _emu_compile(text.replace(old, new), file, tmp_path)})
    proc = _run_emulated(_emu_link(objs, tmp_path), 8)
    assert proc.returncode == 1 and "FAIL bits=" in proc.stdout, proc.stdout[-2000:]
