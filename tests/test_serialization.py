import json
import pickle
import struct

import pytest
import torch

from wfn_testutil import round_to_power_of_two_sums
from wfn_kernels.workflows.models import SmallCNN
from wfn_kernels.nn import convert
from wfn_kernels.nn.io import CorruptFileError, load_packed, read_packed, save_packed


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    m = SmallCNN().eval()
    round_to_power_of_two_sums(m)
    rep = convert(m)
    path = tmp_path / "m.wfn.safetensors"
    save_packed(m, path, rep.codebook)
    return m, path, rep


def test_roundtrip_gives_identical_outputs(saved):
    m, path, rep = saved
    loaded = load_packed(path, SmallCNN().eval())
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(loaded(x), m(x))
    header, _ = read_packed(path)
    assert header["global_codebook"] == rep.codebook.to_list()
    assert [entry["name"] for entry in header["layers"]] == [c["name"] for c in rep.converted]
    assert not list(path.parent.glob("*.tmp")), "atomic write must not leave temp files"


def test_truncated_file(saved):
    _, path, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match="truncated or damaged"):
        load_packed(path, SmallCNN())


def test_tampered_tensor_bytes(saved):
    _, path, _ = saved
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # flip bits in the last tensor's data
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match=r"checksum mismatch in tensor '.*' \(its bytes"):
        load_packed(path, SmallCNN())


def test_tampered_header(saved):
    _, path, _ = saved
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    head = json.loads(data[8:8 + n])
    inner = json.loads(head["__metadata__"]["wfn_header"])
    inner["format_version"] = 99
    head["__metadata__"]["wfn_header"] = json.dumps(inner)
    new = json.dumps(head).encode()
    new += b" " * ((8 - len(new) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(new)) + new + data[8 + n:])
    with pytest.raises(CorruptFileError, match="checksum mismatch in the metadata"):
        load_packed(path, SmallCNN())


def test_unsupported_format_version_is_named(saved):
    """A file sealed correctly but declaring another format_version (a future writer) is refused."""
    from wfn_kernels.format.container import write_sealed_safetensors

    _, path, _ = saved
    _, tensors = read_packed(path)
    header = {"format_version": 99, "layers": [], "checksums": {}}
    write_sealed_safetensors(path, tensors, {"wfn_header": json.dumps(header)}, kind="wfn-packed")
    with pytest.raises(CorruptFileError, match="format_version 99 is not supported"):
        load_packed(path, SmallCNN())


def test_checkpoint_from_another_model(saved):
    _, path, _ = saved
    with pytest.raises(ValueError, match=r"layer 'features.0' has weight shape \(16, 1, 3, 3\) in the file but \(8, 1, 3, 3\).*another model"):
        load_packed(path, SmallCNN(width=8))


def test_pickle_file_is_rejected_without_running_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CorruptFileError):
        load_packed(path, SmallCNN())
    assert not marker.exists()


def test_save_requires_converted_model(tmp_path):
    with pytest.raises(ValueError, match="no WFN layers"):
        save_packed(SmallCNN(), tmp_path / "x.safetensors")
