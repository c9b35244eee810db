import os

import pytest
import torch

# The machine has 2 cores; tests that do not measure threading use one.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Without a GPU the Triton tests run in Triton's interpreter, which must be selected before anything imports
# triton (tests/triton/triton_cases.py sets it at collection, but torchao, imported by test_integrations.py,
# imports triton earlier, and triton.language's own jit helpers are then compiled-mode: "Cannot call
# @triton.jit'd outside of the scope of a kernel"). Every test already ran with it set (collection
# precedes the first test), so this changes only when it is set.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "requires_extension: needs the C++ extension wfn_kernels._C (skipped, with "
                                       "the reason, in a pure-Python install or under WFN_DISABLE_EXT=1)")


def pytest_collection_modifyitems(config, items):
    """Without the C++ extension (WFN_BUILD_EXT=0 install, or WFN_DISABLE_EXT=1) every test that needs it is
    skipped with the reason: tests marked ``requires_extension`` and every case parametrised with
    backend ``extension``. Everything else runs on the reference backend."""
    from wfn_kernels.ops import extension_loaded, extension_reason

    if extension_loaded():
        return
    skip = pytest.mark.skip(reason=f"needs the C++ extension: {extension_reason()}")
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if item.get_closest_marker("requires_extension") or any(isinstance(v, str) and v == "extension"
                                                                for v in params.values()):
            item.add_marker(skip)


DISPATCH_LEVELS = ("scalar", "avx2", "avx512")


@pytest.fixture(params=DISPATCH_LEVELS)
def level(request):
    """Run the test at each SIMD dispatch level of the C++ CPU kernels this CPU supports (skipped, with the
    reason, above the hardware's level or without the extension); the previous level is restored after."""
    from wfn_kernels.ops import extension_loaded, extension_reason

    if not extension_loaded():
        pytest.skip(f"needs the C++ extension: {extension_reason()}")
    if DISPATCH_LEVELS.index(request.param) > DISPATCH_LEVELS.index(torch.ops.wfn_cpu.hardware_capability()):
        pytest.skip(f"CPU lacks {request.param}")
    before = torch.ops.wfn_cpu.capability()
    assert torch.ops.wfn_cpu.set_dispatch(request.param) == request.param
    from wfn_kernels.ops import backends

    assert backends._C.cpu_capability() == request.param  # what available_backends() reports follows
    yield request.param
    torch.ops.wfn_cpu.set_dispatch(before)


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(1234)
